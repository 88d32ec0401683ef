/*
 * vmhelper: a small static helper inside virtmem's default guest, for tests that need something
 * running in the guest with known memory behaviour.
 *
 *   vmhelper alloc MIB   allocate MIB MiB, write to every page (so the guest really backs it),
 *                        print "allocated", then sleep forever.
 *   vmhelper pattern [--devmem PA]... [--spin]
 *                        allocate a 2-page buffer filled with the 8-byte ASCII pattern
 *                        "VIRTMEM!" repeated, print "va=0x... gpa=0x... pid=N" (gpa of the
 *                        buffer's first byte, from /proc/self/pagemap), then sleep forever.
 *                        --devmem PA: also map one page of /dev/mem at physical address PA
 *                        (for a guest-physical address that is not RAM, e.g. an unused hole
 *                        or a device) and print "devmem_va=0x... pa=0x..."; up to 4 times.
 *                        --spin: busy-loop in user mode instead of sleeping, and print
 *                        "spin=0x..." (the loop's address) last. On a single-vCPU guest the
 *                        vCPU's registers (QEMU `info registers`) then show this process:
 *                        CPL 3, RIP at the loop, and CR3 = its page tables, which a host-side
 *                        page-table walk of `va` needs.
 *
 * Pagemap (Documentation/admin-guide/mm/pagemap.rst): one 64-bit entry per virtual page,
 * bit 63 = present, bits 0-54 = PFN. Since Linux 4.2 the PFN reads as 0 without
 * CAP_SYS_ADMIN; the default guest runs everything as root.
 *
 * The buffer is mlock()ed so it is not reclaimed; note that the kernel may still migrate it
 * (compaction, virtio-mem unplug of movable memory), so a reader of the gpa should re-check.
 *
 * Built by src/guest/build.ts with `gcc -static -O2`; plain C99 + POSIX, no dependencies.
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS (glibc) */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <unistd.h>

static const char PATTERN[8] = {'V', 'I', 'R', 'T', 'M', 'E', 'M', '!'};

#define PAGEMAP_PRESENT (UINT64_C(1) << 63)
#define PAGEMAP_PFN_MASK ((UINT64_C(1) << 55) - 1)

static void sleep_forever(void) {
	for (;;) pause();
}

/* Kept out of line so its address is where RIP sits while spinning; the empty asm keeps the
 * compiler from treating the loop as undefined behaviour and removing it. */
static __attribute__((noinline)) void spin_forever(void) {
	for (;;) __asm__ volatile("" ::: "memory");
}

static int usage(void) {
	fprintf(stderr, "usage: vmhelper alloc MIB | vmhelper pattern [--devmem PA]... [--spin]\n");
	return 2;
}

static int cmd_alloc(const char *arg) {
	char *end = NULL;
	errno = 0;
	unsigned long long mib = strtoull(arg, &end, 10);
	if (errno != 0 || end == arg || *end != '\0' || mib == 0 || mib > (SIZE_MAX >> 20)) {
		fprintf(stderr, "vmhelper: alloc: invalid size in MiB: %s\n", arg);
		return 2;
	}
	size_t bytes = (size_t)mib << 20;
	long page = sysconf(_SC_PAGESIZE);
	/* mmap, not malloc: the memory comes straight from the kernel and is untouched until the
	 * loop below writes to it, so "allocated" means the guest really backs MIB MiB. */
	unsigned char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		fprintf(stderr, "vmhelper: alloc: mmap of %llu MiB failed: %s\n", mib, strerror(errno));
		return 1;
	}
	for (size_t off = 0; off < bytes; off += (size_t)page) p[off] = (unsigned char)(off >> 12 | 1);
	printf("allocated\n");
	fflush(stdout);
	sleep_forever();
	return 0;
}

/* Maps one page of /dev/mem at physical address `pa` and touches it, so the page-table entry
 * exists. Returns the mapping or NULL (with a message). */
static volatile unsigned char *map_devmem(uint64_t pa, long page) {
	int fd = open("/dev/mem", O_RDONLY | O_SYNC);
	if (fd < 0) {
		fprintf(stderr, "vmhelper: pattern: open /dev/mem: %s\n", strerror(errno));
		return NULL;
	}
	void *p = mmap(NULL, (size_t)page, PROT_READ, MAP_SHARED, fd, (off_t)pa);
	int err = errno;
	close(fd);
	if (p == MAP_FAILED) {
		fprintf(stderr, "vmhelper: pattern: mmap /dev/mem at 0x%" PRIx64 ": %s\n", pa, strerror(err));
		return NULL;
	}
	volatile unsigned char *v = p;
	(void)v[0];
	return v;
}

#define MAX_DEVMEM 4

static int cmd_pattern(int spin, int ndevmem, const uint64_t *devmem_pa) {
	long page = sysconf(_SC_PAGESIZE);
	size_t len = 2 * (size_t)page;
	void *mem = NULL;
	int rc = posix_memalign(&mem, (size_t)page, len);
	if (rc != 0) {
		fprintf(stderr, "vmhelper: pattern: allocation failed: %s\n", strerror(rc));
		return 1;
	}
	unsigned char *buf = mem;
	for (size_t off = 0; off < len; off += sizeof PATTERN) memcpy(buf + off, PATTERN, sizeof PATTERN);
	if (mlock(buf, len) != 0) fprintf(stderr, "vmhelper: pattern: mlock: %s (continuing)\n", strerror(errno));

	int fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd < 0) {
		fprintf(stderr, "vmhelper: pattern: open /proc/self/pagemap: %s\n", strerror(errno));
		return 1;
	}
	uintptr_t va = (uintptr_t)buf;
	uint64_t entry = 0;
	off_t where = (off_t)(va / (uintptr_t)page) * (off_t)sizeof entry;
	ssize_t got = pread(fd, &entry, sizeof entry, where);
	close(fd);
	if (got != (ssize_t)sizeof entry) {
		fprintf(stderr, "vmhelper: pattern: read pagemap: %s\n", got < 0 ? strerror(errno) : "short read");
		return 1;
	}
	uint64_t pfn = entry & PAGEMAP_PFN_MASK;
	if (!(entry & PAGEMAP_PRESENT) || pfn == 0) {
		fprintf(stderr, "vmhelper: pattern: page not present or PFN hidden (needs root), entry=0x%" PRIx64 "\n", entry);
		return 1;
	}
	uint64_t gpa = pfn * (uint64_t)page + (uint64_t)(va % (uintptr_t)page);
	volatile unsigned char *dm[MAX_DEVMEM] = {NULL};
	for (int i = 0; i < ndevmem; i++) {
		if ((dm[i] = map_devmem(devmem_pa[i], page)) == NULL) return 1;
	}
	printf("va=0x%" PRIxPTR " gpa=0x%" PRIx64 " pid=%ld\n", va, gpa, (long)getpid());
	for (int i = 0; i < ndevmem; i++) printf("devmem_va=0x%" PRIxPTR " pa=0x%" PRIx64 "\n", (uintptr_t)dm[i], devmem_pa[i]);
	if (spin) printf("spin=0x%" PRIxPTR "\n", (uintptr_t)&spin_forever);
	fflush(stdout);
	if (spin) spin_forever();
	sleep_forever();
	return 0;
}

int main(int argc, char **argv) {
	if (argc == 3 && strcmp(argv[1], "alloc") == 0) return cmd_alloc(argv[2]);
	if (argc >= 2 && strcmp(argv[1], "pattern") == 0) {
		int spin = 0, ndevmem = 0;
		uint64_t pa[MAX_DEVMEM];
		for (int i = 2; i < argc; i++) {
			if (strcmp(argv[i], "--spin") == 0) {
				spin = 1;
			} else if (strcmp(argv[i], "--devmem") == 0 && i + 1 < argc && ndevmem < MAX_DEVMEM) {
				char *end = NULL;
				errno = 0;
				pa[ndevmem++] = strtoull(argv[++i], &end, 0);
				if (errno != 0 || *end != '\0') return usage();
			} else {
				return usage();
			}
		}
		return cmd_pattern(spin, ndevmem, pa);
	}
	return usage();
}
