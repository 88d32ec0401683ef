/**
 * virtmem's public API: the driver (domains, lifecycle, memory), its errors and model, and the
 * QMP client underneath for those who need the raw protocol.
 */
export { Driver } from './driver/native/driver.js';
export type { DriverOptions, AffectFlags, DomainSummary, DomainInfo, SetMemoryOptions, SetMemoryResult, BalloonProgress, StartOptions } from './driver/native/driver.js';
export { VirtError } from './domain/errors.js';
export type { VirtErrorCode } from './domain/errors.js';
export type { DomainDef, MemoryDef, BalloonDef, DiskDef, MemoryDeviceDef, VirtioMemDef, DimmDef, OsDef } from './domain/definition.js';
export type { MemoryStats, MemoryStat } from './driver/memory/stats.js';
export { parseDomainXml, formatDomainXml } from './domain/xml.js';
export { parseScaledKiB } from './domain/size.js';
export * as qmp from './qmp/index.js';
