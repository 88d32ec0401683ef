/**
 * libvirt's RPC programs and the procedures virtmem uses, with their argument and reply types
 * as pure XDR codecs. Numbers and layouts follow libvirt's remote_protocol.x, virnetprotocol.x,
 * virkeepaliveprotocol.x and qemu_protocol.x (the wire ABI is stable: numbers are never reused).
 */
import { XdrError, XdrReader, XdrWriter } from './xdr.js';

export const REMOTE_PROGRAM = 0x20008086;
export const REMOTE_VERSION = 1;
export const QEMU_PROGRAM = 0x20008087;
export const QEMU_VERSION = 1;
export const KEEPALIVE_PROGRAM = 0x6b656570;
export const KEEPALIVE_VERSION = 1;
export const KeepaliveProc = { PING: 1, PONG: 2 } as const;
export const QemuProc = { MONITOR_COMMAND: 1 } as const;

/** remote_procedure numbers used here. */
export const Proc = {
  CONNECT_OPEN: 1,
  CONNECT_CLOSE: 2,
  CONNECT_GET_CAPABILITIES: 7,
  DOMAIN_CREATE: 9,
  DOMAIN_DEFINE_XML: 11,
  DOMAIN_DESTROY: 12,
  DOMAIN_GET_XML_DESC: 14,
  DOMAIN_GET_AUTOSTART: 15,
  DOMAIN_GET_INFO: 16,
  DOMAIN_GET_OS_TYPE: 19,
  DOMAIN_LOOKUP_BY_ID: 22,
  DOMAIN_LOOKUP_BY_NAME: 23,
  DOMAIN_LOOKUP_BY_UUID: 24,
  DOMAIN_SET_MAX_MEMORY: 30,
  DOMAIN_SHUTDOWN: 33,
  DOMAIN_UNDEFINE: 35,
  CONNECT_SUPPORTS_FEATURE: 60,
  AUTH_LIST: 66,
  AUTH_POLKIT: 70,
  NODE_GET_CELLS_FREE_MEMORY: 101,
  NODE_GET_FREE_MEMORY: 102,
  DOMAIN_GET_SECURITY_LABEL: 121,
  NODE_GET_SECURITY_MODEL: 122,
  DOMAIN_HAS_MANAGED_SAVE_IMAGE: 183,
  DOMAIN_CREATE_WITH_FLAGS: 196,
  DOMAIN_IS_ACTIVE: 150,
  DOMAIN_IS_PERSISTENT: 151,
  CONNECT_GET_LIB_VERSION: 157,
  DOMAIN_MEMORY_STATS: 159,
  DOMAIN_ATTACH_DEVICE_FLAGS: 160,
  DOMAIN_DETACH_DEVICE_FLAGS: 161,
  DOMAIN_UPDATE_DEVICE_FLAGS: 174,
  DOMAIN_SET_MEMORY_PARAMETERS: 197,
  DOMAIN_GET_MEMORY_PARAMETERS: 198,
  DOMAIN_SET_MEMORY_FLAGS: 204,
  NODE_GET_MEMORY_STATS: 228,
  DOMAIN_SET_NUMA_PARAMETERS: 254,
  DOMAIN_GET_NUMA_PARAMETERS: 255,
  DOMAIN_GET_STATE: 212,
  DOMAIN_UNDEFINE_FLAGS: 231,
  DOMAIN_DESTROY_FLAGS: 234,
  DOMAIN_SHUTDOWN_FLAGS: 258,
  DOMAIN_SET_METADATA: 264,
  DOMAIN_GET_METADATA: 265,
  CONNECT_LIST_ALL_DOMAINS: 273,
  DOMAIN_EVENT_BALLOON_CHANGE: 276,
  NODE_SET_MEMORY_PARAMETERS: 288,
  NODE_GET_MEMORY_PARAMETERS: 289,
  DOMAIN_SET_MEMORY_STATS_PERIOD: 308,
  CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY: 316,
  CONNECT_DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY: 317,
  DOMAIN_EVENT_CALLBACK_LIFECYCLE: 318,
  DOMAIN_EVENT_CALLBACK_BALLOON_CHANGE: 331,
  DOMAIN_EVENT_CALLBACK_METADATA_CHANGE: 379,
  NODE_GET_FREE_PAGES: 340,
  CONNECT_GET_ALL_DOMAIN_STATS: 344,
  NODE_ALLOC_PAGES: 347,
  DOMAIN_GET_MESSAGES: 426,
  DOMAIN_START_DIRTY_RATE_CALC: 427,
} as const;

/** REMOTE_DOMAIN_MESSAGES_MAX: the most messages (taints, deprecations) one reply carries. */
export const DOMAIN_MESSAGES_MAX = 2048;

/** remote_auth_type. */
export const AuthType = { NONE: 0, SASL: 1, POLKIT: 2 } as const;

/** virDomainEventID values virtmem subscribes to. */
export const EventId = { LIFECYCLE: 0, BALLOON_CHANGE: 13, METADATA_CHANGE: 23, MEMORY_DEVICE_SIZE_CHANGE: 26 } as const;

/** virDomainModificationImpact and virDomainMemoryModFlags. */
export const AffectFlag = { CURRENT: 0, LIVE: 1, CONFIG: 2, MEM_MAXIMUM: 4 } as const;
/** virConnectListAllDomainsFlags. */
export const ListFlag = { ACTIVE: 1, INACTIVE: 2 } as const;
/** virDomainXMLFlags. */
export const XmlFlag = { SECURE: 1, INACTIVE: 2 } as const;
/** REMOTE_DOMAIN_MEMORY_PARAMETERS_MAX and REMOTE_DOMAIN_NUMA_PARAMETERS_MAX. */
export const DOMAIN_PARAMETERS_MAX = 16;
/** REMOTE_CONNECT_GET_ALL_DOMAIN_STATS_MAX: the most typed parameters one domain's record carries. */
export const DOMAIN_STATS_PARAMS_MAX = 262144;
/** REMOTE_DOMAIN_LIST_MAX. */
export const DOMAIN_LIST_MAX = 16384;
/** VIR_TYPED_PARAM_STRING_OKAY: the client takes string parameters (libvirt's client library adds it to every get). */
export const TYPED_PARAM_STRING_OKAY = 4;
/** virDomainStatsTypes. */
export const StatsType = { STATE: 1, CPU_TOTAL: 2, BALLOON: 4, VCPU: 8 } as const;
/**
 * VIR_DRV_FEATURE_PROGRAM_KEEPALIVE (libvirt_internal.h): the client speaks the keepalive
 * program. 10, not 7: 7 is MIGRATE_CHANGE_PROTECTION, which every qemu daemon also "supports",
 * so asking for 7 looks like success but never turns the daemon's pings on.
 */
export const FEATURE_PROGRAM_KEEPALIVE = 10;

export const STRING_MAX = 4 * 1024 * 1024;
export const UUID_BYTES = 16;

/** remote_nonnull_domain: how a domain is named on the wire. */
export interface WireDomain {
  name: string;
  /** 16 raw bytes. */
  uuid: Buffer;
  /** -1 when not running. */
  id: number;
}

export function writeDomain(w: XdrWriter, d: WireDomain): void {
  w.string(d.name, STRING_MAX).fixedOpaque(d.uuid, UUID_BYTES).int(d.id);
}

export function readDomain(r: XdrReader): WireDomain {
  return { name: r.string(STRING_MAX), uuid: r.fixedOpaque(UUID_BYTES), id: r.int() };
}

/** The canonical text form of a 16-byte UUID. */
export function uuidText(uuid: Buffer): string {
  const h = uuid.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Parse a UUID in text form (with or without dashes); null when it is not one. */
export function uuidBytes(text: string): Buffer | null {
  const hex = text.replace(/-/g, '');
  return /^[0-9a-fA-F]{32}$/.test(hex) ? Buffer.from(hex, 'hex') : null;
}

/** remote_error (virNetMessageError). */
export interface WireError {
  code: number;
  domain: number;
  message: string | null;
  level: number;
  str1: string | null;
  str2: string | null;
  str3: string | null;
  int1: number;
  int2: number;
}

export function readError(r: XdrReader): WireError {
  const code = r.int();
  const domain = r.int();
  const message = r.optional((x) => x.string(STRING_MAX));
  const level = r.int();
  r.optional(readDomain);
  const str1 = r.optional((x) => x.string(STRING_MAX));
  const str2 = r.optional((x) => x.string(STRING_MAX));
  const str3 = r.optional((x) => x.string(STRING_MAX));
  const int1 = r.int();
  const int2 = r.int();
  r.optional((x) => ({ name: x.string(STRING_MAX), uuid: x.fixedOpaque(UUID_BYTES) }));
  return { code, domain, message, level, str1, str2, str3, int1, int2 };
}

export function writeError(w: XdrWriter, e: WireError): void {
  const s = (v: string | null): void => { w.optional(v, (x, t) => x.string(t)); };
  w.int(e.code).int(e.domain);
  s(e.message);
  w.int(e.level).int(0);
  s(e.str1); s(e.str2); s(e.str3);
  w.int(e.int1).int(e.int2).int(0);
}

/** virTypedParameter: the value keeps its wire type. */
export type TypedValue =
  | { type: 'int'; value: number } | { type: 'uint'; value: number }
  | { type: 'llong'; value: bigint } | { type: 'ullong'; value: bigint }
  | { type: 'double'; value: number } | { type: 'boolean'; value: boolean }
  | { type: 'string'; value: string };
export interface TypedParam { field: string; value: TypedValue }

const PARAM_TYPES = ['int', 'uint', 'llong', 'ullong', 'double', 'boolean', 'string'] as const;

export function writeTypedParam(w: XdrWriter, p: TypedParam): void {
  w.string(p.field, STRING_MAX);
  const v = p.value;
  w.int(PARAM_TYPES.indexOf(v.type) + 1);
  switch (v.type) {
    case 'int': w.int(v.value); break;
    case 'uint': w.uint(v.value); break;
    case 'llong': w.hyper(v.value); break;
    case 'ullong': w.uhyper(v.value); break;
    case 'double': w.double(v.value); break;
    case 'boolean': w.int(v.value ? 1 : 0); break;
    case 'string': w.string(v.value, STRING_MAX); break;
  }
}

export function readTypedParam(r: XdrReader): TypedParam {
  const field = r.string(STRING_MAX);
  const t = r.int();
  switch (t) {
    case 1: return { field, value: { type: 'int', value: r.int() } };
    case 2: return { field, value: { type: 'uint', value: r.uint() } };
    case 3: return { field, value: { type: 'llong', value: r.hyperBig() } };
    case 4: return { field, value: { type: 'ullong', value: r.uhyperBig() } };
    case 5: return { field, value: { type: 'double', value: r.double() } };
    case 6: return { field, value: { type: 'boolean', value: r.int() !== 0 } };
    case 7: return { field, value: { type: 'string', value: r.string(STRING_MAX) } };
    default: throw new XdrError(`typed parameter '${field}' has unknown type ${t}`);
  }
}

/** A typed parameter's value as a JS number (bigints converted; strings/booleans: null). */
export function paramNumber(v: TypedValue | undefined): number | null {
  if (!v) return null;
  if (v.type === 'llong' || v.type === 'ullong') return Number(v.value);
  if (v.type === 'int' || v.type === 'uint' || v.type === 'double') return v.value;
  return null;
}

/** remote_domain_get_info_ret. */
export interface WireDomainInfo {
  state: number;
  maxMemKiB: number;
  memoryKiB: number;
  nrVirtCpu: number;
  cpuTimeNs: bigint;
}

export function readDomainInfo(r: XdrReader): WireDomainInfo {
  // unsigned char and unsigned short travel as 4-byte unsigned ints.
  return { state: r.uint(), maxMemKiB: r.uhyper(), memoryKiB: r.uhyper(), nrVirtCpu: r.uint(), cpuTimeNs: r.uhyperBig() };
}

/** virDomainMemoryStatTags in order: the names virsh dommemstat prints. */
export const MEMORY_STAT_NAMES = [
  'swap_in', 'swap_out', 'major_fault', 'minor_fault', 'unused', 'available', 'actual',
  'rss', 'usable', 'last_update', 'disk_caches', 'hugetlb_pgalloc', 'hugetlb_pgfail',
] as const;
/** REMOTE_DOMAIN_MEMORY_STATS_MAX / VIR_DOMAIN_MEMORY_STAT_NR. */
export const MEMORY_STATS_MAX = 13;

/** A domain event decoded from a MESSAGE packet. */
export type DomainEvent =
  | { kind: 'lifecycle'; callbackId: number; dom: WireDomain; event: number; detail: number }
  | { kind: 'balloon-change'; callbackId: number; dom: WireDomain; actualKiB: number }
  | { kind: 'memory-device-size-change'; callbackId: number; dom: WireDomain; alias: string; sizeKiB: number }
  /** The domain's metadata changed (type: virDomainMetadataType; nsuri for an element). */
  | { kind: 'metadata-change'; callbackId: number; dom: WireDomain; type: number; nsuri: string | null };

/**
 * REMOTE_PROC_DOMAIN_EVENT_MEMORY_DEVICE_SIZE_CHANGE. Not in the older protocol files we read;
 * 438 is what libvirt 9.0 on this machine sends (observed: registering event id 26 and resizing).
 */
export const PROC_EVENT_MEMORY_DEVICE_SIZE_CHANGE = 438;

/** Decode a domain event; null for procedures virtmem does not subscribe to. */
export function decodeDomainEvent(proc: number, payload: Buffer): DomainEvent | null {
  const r = new XdrReader(payload);
  let ev: DomainEvent | null;
  switch (proc) {
    case Proc.DOMAIN_EVENT_CALLBACK_LIFECYCLE: {
      const callbackId = r.int();
      ev = { kind: 'lifecycle', callbackId, dom: readDomain(r), event: r.int(), detail: r.int() };
      break;
    }
    case Proc.DOMAIN_EVENT_CALLBACK_BALLOON_CHANGE: {
      const callbackId = r.int();
      ev = { kind: 'balloon-change', callbackId, dom: readDomain(r), actualKiB: r.uhyper() };
      break;
    }
    case Proc.DOMAIN_EVENT_CALLBACK_METADATA_CHANGE: {
      const callbackId = r.int();
      const dom = readDomain(r);
      const type = r.int();
      ev = { kind: 'metadata-change', callbackId, dom, type, nsuri: r.uint() === 0 ? null : r.string(STRING_MAX) };
      break;
    }
    case PROC_EVENT_MEMORY_DEVICE_SIZE_CHANGE: {
      const callbackId = r.int();
      ev = { kind: 'memory-device-size-change', callbackId, dom: readDomain(r), alias: r.string(STRING_MAX), sizeKiB: r.uhyper() };
      break;
    }
    default:
      return null;
  }
  r.end();
  return ev;
}

/** XDR `char name<N>`: an array of 4-byte chars, NUL-terminated by libvirt. */
export function readCharArray(r: XdrReader, max: number): string {
  const codes = r.array((x) => x.int(), max);
  const end = codes.indexOf(0);
  return Buffer.from((end < 0 ? codes : codes.slice(0, end)).map((c) => c & 0xff)).toString('utf8');
}

/** REMOTE_NODE_MAX_CELLS: the most cells (and page sizes) one node-memory call carries. */
export const NODE_MAX_CELLS = 1024;
/** REMOTE_NODE_MEMORY_STATS_MAX. */
export const NODE_MEMORY_STATS_MAX = 16;
/** REMOTE_NODE_MEMORY_PARAMETERS_MAX. */
export const NODE_MEMORY_PARAMETERS_MAX = 64;
/** virNodeAllocPagesFlags: VIR_NODE_ALLOC_PAGES_ADD is 0 (no bit), SET replaces the pool size. */
export const AllocPagesFlag = { ADD: 0, SET: 1 } as const;

/** remote_node_get_memory_stats_ret: the statistics (field, value in KiB) and their count. */
export function readNodeMemoryStats(r: XdrReader): { params: Array<{ field: string; value: number }>; nparams: number } {
  const params = r.array((x) => ({ field: x.string(STRING_MAX), value: x.uhyper() }), NODE_MEMORY_STATS_MAX);
  return { params, nparams: r.int() };
}

/** remote_node_get_memory_parameters_ret: typed parameters and their count. */
export function readNodeMemoryParameters(r: XdrReader): { params: TypedParam[]; nparams: number } {
  const params = r.array(readTypedParam, NODE_MEMORY_PARAMETERS_MAX);
  return { params, nparams: r.int() };
}

/** remote_node_get_free_pages_args. */
export function writeFreePagesArgs(w: XdrWriter, pageSizesKiB: readonly number[], startCell: number, cellCount: number): void {
  w.array(pageSizesKiB, (x, v) => x.uint(v), NODE_MAX_CELLS).int(startCell).uint(cellCount).uint(0);
}

/** remote_node_alloc_pages_args. */
export function writeAllocPagesArgs(w: XdrWriter, pageSizesKiB: readonly number[], pageCounts: readonly number[], startCell: number, cellCount: number, flags: number): void {
  w.array(pageSizesKiB, (x, v) => x.uint(v), NODE_MAX_CELLS).array(pageCounts, (x, v) => x.uhyper(v), NODE_MAX_CELLS).int(startCell).uint(cellCount).uint(flags);
}
