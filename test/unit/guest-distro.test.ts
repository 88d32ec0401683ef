/**
 * The pure parts of the distro guest build (src/guest/distro.ts): which mirror apt's sources
 * name for bookworm, and which manifests are trusted.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { madisonVersion, mountsUnder, pickDebianMirror, parseDistroManifest, parseDistroName } from '../../src/guest/distro.js';

const DEB822 = `Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
`;

test('deb822 .sources: the entry carrying the suite itself, not -security', () => {
  assert.equal(pickDebianMirror([{ name: '/etc/apt/sources.list.d/debian.sources', text: DEB822 }]), 'http://deb.debian.org/debian');
  const securityOnly = DEB822.split('\n\n')[1]!;
  assert.equal(pickDebianMirror([{ name: 'x.sources', text: securityOnly }]), null);
});

test('deb822: deb-src, Enabled: no, no main component and non-http URIs are skipped', () => {
  const text = [
    'Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\nComponents: main',
    'Types: deb\nEnabled: no\nURIs: http://off.example/debian\nSuites: bookworm\nComponents: main',
    'Types: deb\nURIs: http://contrib.example/debian\nSuites: bookworm\nComponents: contrib',
    'Types: deb\nURIs: file:/srv/mirror\nSuites: bookworm\nComponents: main',
    'Types: deb\nURIs: https://mirror.example/debian\nSuites: bookworm\nComponents: main contrib',
  ].join('\n\n');
  assert.equal(pickDebianMirror([{ name: 'a.sources', text }]), 'https://mirror.example/debian');
});

test('one-line .list format, with options and comments; first file wins', () => {
  const list = `# deb http://commented.example/debian bookworm main
deb-src http://src.example/debian bookworm main
deb [arch=amd64 signed-by=/k.gpg] http://list.example/debian bookworm main contrib # trailing
deb http://list.example/debian-security bookworm-security main
`;
  assert.equal(pickDebianMirror([{ name: '/etc/apt/sources.list', text: list }]), 'http://list.example/debian');
  assert.equal(pickDebianMirror([{ name: '/etc/apt/sources.list', text: list }, { name: 'b.sources', text: DEB822 }]), 'http://list.example/debian');
  assert.equal(pickDebianMirror([{ name: '/etc/apt/sources.list', text: '' }, { name: 'b.sources', text: DEB822 }]), 'http://deb.debian.org/debian');
});

test('files of other kinds are ignored (apt reads only .list and .sources)', () => {
  assert.equal(pickDebianMirror([{ name: 'nodesource.sources.disabled-by-farm', text: DEB822 }]), null);
  assert.equal(pickDebianMirror([]), null);
});

const GOOD = {
  formatVersion: 1, distro: 'debian12', kernelFile: 'vmlinuz', initrdFile: 'initrd.img', imageFile: 'root.raw',
  cmdline: 'console=ttyS0 root=/dev/vda rw', kernelVersion: '6.1.0-50-cloud-amd64', kernelPackageVersion: '6.1.158-1',
  mirror: 'http://deb.debian.org/debian', builtAt: '2026-12-03T06:55:00.000Z', buildS: 120,
};

test('manifest: a complete one parses, anything else is not trusted', () => {
  assert.deepEqual(parseDistroManifest(JSON.stringify(GOOD)), GOOD);
  assert.equal(parseDistroManifest('not json'), null);
  assert.equal(parseDistroManifest('null'), null);
  assert.equal(parseDistroManifest(JSON.stringify({ ...GOOD, formatVersion: 2 })), null);
  assert.equal(parseDistroManifest(JSON.stringify({ ...GOOD, distro: 'fedora' })), null);
  assert.equal(parseDistroManifest(JSON.stringify({ ...GOOD, kernelVersion: '' })), null);
  assert.equal(parseDistroManifest(JSON.stringify({ ...GOOD, imageFile: '../etc/passwd' })), null);
  assert.equal(parseDistroManifest(JSON.stringify({ ...GOOD, buildS: '120' })), null);
});

test('distro names', () => {
  assert.equal(parseDistroName('debian12'), 'debian12');
  assert.throws(() => parseDistroName('debian11'), { code: 'GUEST_BUILD_FAILED', message: /unknown distro 'debian11'; known: debian12/ });
});

test('mount points left under a build folder are found, deepest first, octal escapes decoded', () => {
  const mounts = [
    'proc /proc proc rw 0 0',
    'proc /var/cache/g/.b-1/root/proc proc rw 0 0',
    'sysfs /var/cache/g/.b-1/root/sys sysfs rw 0 0',
    'x /var/cache/g/.b-1/root/sys/fs/a\\040b tmpfs rw 0 0',
    'y /var/cache/g/.b-10/root/proc proc rw 0 0',
  ].join('\n');
  assert.deepEqual(mountsUnder(mounts, '/var/cache/g/.b-1'), [
    '/var/cache/g/.b-1/root/sys/fs/a b',
    '/var/cache/g/.b-1/root/proc',
    '/var/cache/g/.b-1/root/sys',
  ]);
  assert.deepEqual(mountsUnder(mounts, '/nothing'), []);
});

test('cache key: the kernel version apt lists for the mirror and suite debootstrap uses, not -security', () => {
  const madison = [
    'linux-image-cloud-amd64 |  6.1.192-3 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages',
    'linux-image-cloud-amd64 |  6.1.176-1 | http://deb.debian.org/debian bookworm/main amd64 Packages',
  ].join('\n');
  const pkg = 'linux-image-cloud-amd64';
  assert.equal(madisonVersion(madison, pkg, 'http://deb.debian.org/debian'), '6.1.176-1');
  assert.equal(madisonVersion(madison, pkg, 'http://deb.debian.org/debian/'), '6.1.176-1');
  assert.equal(madisonVersion(madison, pkg, 'http://other.example/debian'), null);
  assert.equal(madisonVersion(madison, 'linux-image-amd64', 'http://deb.debian.org/debian'), null);
  assert.equal(madisonVersion(madison, pkg, 'http://deb.debian.org/debian', 'trixie'), null);
  assert.equal(madisonVersion('', pkg, 'http://deb.debian.org/debian'), null);
});
