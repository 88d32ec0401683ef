/**
 * virtmem's public API: the driver (domains, lifecycle, memory), its errors and model, and the
 * QMP client underneath for those who need the raw protocol.
 */
export { Driver } from './driver/driver.js';
export type { DriverOptions, AffectFlags, DomainSummary, DomainInfo, SetMemoryOptions, SetMemoryResult, BalloonProgress, StartOptions } from './driver/driver.js';
export { VirtError } from './driver/errors.js';
export type { VirtErrorCode } from './driver/errors.js';
export type { DomainDef, MemoryDef, BalloonDef, DiskDef, MemoryDeviceDef, VirtioMemDef, DimmDef, OsDef } from './driver/definition.js';
export type { MemoryStats, MemoryStat } from './driver/memory-stats.js';
export { parseDomainXml, formatDomainXml } from './driver/xml.js';
export { parseScaledKiB } from './driver/size.js';
export * as qmp from './qmp/index.js';
