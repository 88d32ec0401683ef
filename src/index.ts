/**
 * virtmem's public API: the driver face (every driver's interface and types, and how to open
 * one by URI), definitions and their libvirt XML, sizes, and the QMP client underneath for
 * those who need the raw protocol.
 */
export * from './driver/api.js';
export { openDriver, chooseUri, type ConnectOptions } from './driver/connect.js';
export { NativeDriver, type NativeOptions } from './driver/native/driver.js';
export type {
  DomainDef, MemoryDef, BalloonDef, DiskDef, MemoryDeviceDef, VirtioMemDef, DimmDef, NvdimmDef, VirtioPmemDef, OsDef,
  MemoryBackingDef, HugepageDef, GuestNumaDef, NumaCellDef, NumatuneDef, NumaMode, MemtuneDef, MemAccess,
} from './domain/definition.js';
export { parseDomainXml, formatDomainXml } from './domain/xml.js';
export { parseScaledKiB } from './domain/size.js';
export * as qmp from './qmp/index.js';
