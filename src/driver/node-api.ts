/**
 * The host's (node's) memory as the neutral driver API offers it: free memory per NUMA cell,
 * huge page pools, KSM's knobs and the memory statistics, shaped after libvirt's virNode*
 * calls so virsh's freecell, freepages, allocpages, node-memory-tune and nodememstats map
 * onto it one to one. Both drivers implement it (`HypervisorDriver.node`); units are in the
 * names (bytes where libvirt's API speaks bytes, KiB where it speaks KiB, pages as counts).
 */

/** libvirt's cell number meaning "the whole host" (VIR_NODE_MEMORY_STATS_ALL_CELLS, and -1 for pages). */
export const ALL_CELLS = -1;

export interface NodeCell {
  id: number;
  /** Size of each page pool in this cell, by page size (the system page size counts all pages). */
  pages: Array<{ sizeKiB: number; count: number }>;
}

/** The host's NUMA cells and the page sizes it offers (what virsh reads from the capabilities). */
export interface NodeTopology {
  cells: NodeCell[];
  /** Page sizes the host supports, smallest first: the system page size, then huge pages. */
  pageSizesKiB: number[];
}

/** One line of `nodememstats`: libvirt's field name ("total", "free", "buffers", "cached"). */
export interface NodeMemoryStat {
  field: string;
  valueKiB: number;
}

/** One KSM parameter as libvirt names it ("shm_pages_to_scan", ...). */
export interface NodeMemoryParameter {
  field: string;
  /** libvirt's typed-parameter type: the knobs are uint, the counters ullong. */
  type: 'uint' | 'ullong';
  value: number;
}

/** The KSM knobs that can be set; an absent field is left as it is. */
export interface NodeMemoryParametersUpdate {
  shmPagesToScan?: number;
  shmSleepMillisecs?: number;
  shmMergeAcrossNodes?: number;
}

/** libvirt's field names for the settable knobs, in the order virsh sends them. */
export const NODE_MEMORY_PARAMETER_FIELDS = [
  ['shmPagesToScan', 'shm_pages_to_scan'],
  ['shmSleepMillisecs', 'shm_sleep_millisecs'],
  ['shmMergeAcrossNodes', 'shm_merge_across_nodes'],
] as const satisfies ReadonlyArray<readonly [keyof NodeMemoryParametersUpdate, string]>;

export interface AllocPagesRequest {
  pageSizeKiB: number;
  pageCount: number;
  /** The cells to size, each a cell id or ALL_CELLS (the host-wide pool). */
  cells: number[];
  /** Add pageCount pages to each pool instead of setting its size (VIR_NODE_ALLOC_PAGES_ADD). */
  add: boolean;
}

export interface AllocPagesResult {
  /** Each pool as it is afterwards. */
  pools: Array<{ cell: number; pageSizeKiB: number; count: number }>;
}

export interface SignalOption {
  signal?: AbortSignal;
}

/**
 * Host memory operations. Errors are VirtError with libvirt's words (virsh prints them as they
 * are); changes are validated before anything is written, and a change the host could make only
 * in part is undone, so a refused or failed call leaves the host as it was.
 */
export interface NodeMemory {
  /** NUMA cells and page sizes (virConnectGetCapabilities' host topology). */
  topology(opts?: SignalOption): Promise<NodeTopology>;
  /** Free memory of the whole host in bytes (virNodeGetFreeMemory). */
  freeMemoryBytes(opts?: SignalOption): Promise<number>;
  /**
   * Free memory of cells startCell.. (at most maxCells of them) in bytes
   * (virNodeGetCellsFreeMemory).
   * @throws VirtError INVALID_ARG for a negative startCell or one past the last cell.
   */
  freeCellsBytes(startCell: number, maxCells: number, opts?: SignalOption): Promise<number[]>;
  /**
   * Free pages of each size in cells startCell.. (or ALL_CELLS), cell-major (virNodeGetFreePages).
   * @throws VirtError when a page size does not exist on a cell, or the cell is out of range.
   */
  freePages(pageSizesKiB: number[], startCell: number, cellCount: number, opts?: SignalOption): Promise<number[]>;
  /**
   * Resize huge page pools (virNodeAllocPages), refusing growth the host cannot back and
   * undoing every pool already resized when one cannot be.
   */
  allocPages(req: AllocPagesRequest, opts?: SignalOption): Promise<AllocPagesResult>;
  /** KSM parameters in libvirt's order (virNodeGetMemoryParameters). */
  memoryParameters(opts?: SignalOption): Promise<NodeMemoryParameter[]>;
  /**
   * Set KSM knobs (virNodeSetMemoryParameters); all or nothing.
   * @throws VirtError INVALID_ARG before anything is written when a value is out of range.
   */
  setMemoryParameters(update: NodeMemoryParametersUpdate, opts?: SignalOption): Promise<void>;
  /** Memory statistics of one cell, or of the host with ALL_CELLS (virNodeGetMemoryStats). */
  memoryStats(cell: number, opts?: SignalOption): Promise<NodeMemoryStat[]>;
}
