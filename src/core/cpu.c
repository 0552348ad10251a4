/*
 * cpu.c: what the processor can do, read at run time so one binary serves AVX2-only and
 * AVX-512 machines. Features come from cpuid; the OS must also save the wider registers
 * (XCR0 via xgetbv), or the instructions fault. Cache sizes come from /sys, falling back to glibc's
 * sysconf. VOX_ISA caps the ISA in use.
 */
#include "vox/core.h"

#include <cpuid.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char *const isa_names[] = {"ref", "avx2", "avx512"};

const char *vox_isa_str(enum vox_isa isa)
{
    return (unsigned)isa < 3 ? isa_names[isa] : "unknown";
}

static uint64_t read_xcr0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static void read_brand(struct vox_cpu *c)
{
    unsigned a, b, d, e;
    unsigned max_ext = __get_cpuid_max(0x80000000u, NULL);
    if (max_ext < 0x80000004u) {
        snprintf(c->model, sizeof c->model, "unknown");
        return;
    }
    unsigned regs[12];
    for (unsigned i = 0; i < 3; i++) {
        __cpuid(0x80000002u + i, a, b, d, e);
        regs[4 * i] = a, regs[4 * i + 1] = b, regs[4 * i + 2] = d, regs[4 * i + 3] = e;
    }
    char brand[49];
    memcpy(brand, regs, 48);
    brand[48] = '\0';
    const char *s = brand;
    while (*s == ' ')
        s++;
    snprintf(c->model, sizeof c->model, "%s", s);
    size_t n = strlen(c->model);
    while (n > 0 && c->model[n - 1] == ' ')
        c->model[--n] = '\0';
}

static int64_t sys_cache(int level, const char *type)
{
    char path[128], buf[64];
    for (int i = 0; i < 8; i++) {
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", i);
        FILE *f = fopen(path, "r");
        if (!f)
            break;
        int lv = 0;
        int ok = fscanf(f, "%d", &lv) == 1;
        fclose(f);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/type", i);
        f = fopen(path, "r");
        if (!f || !ok)
            continue;
        ok = fscanf(f, "%63s", buf) == 1;
        fclose(f);
        if (!ok || lv != level || strcmp(buf, type) != 0)
            continue;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
        f = fopen(path, "r");
        if (!f)
            continue;
        long kb = 0;
        ok = fscanf(f, "%ldK", &kb) == 1;
        fclose(f);
        if (ok)
            return (int64_t)kb * 1024;
    }
    return 0;
}

static void read_caches(struct vox_cpu *c)
{
    /* /sys first: glibc's sysconf misreads the L3 on some virtual machines (384 MiB reported
     * for a 32 MiB L3 on a KVM guest of an AMD EPYC). */
    c->l1d_bytes = sys_cache(1, "Data");
    c->l2_bytes = sys_cache(2, "Unified");
    c->l3_bytes = sys_cache(3, "Unified");
    if (c->l1d_bytes <= 0)
        c->l1d_bytes = sysconf(_SC_LEVEL1_DCACHE_SIZE);
    if (c->l2_bytes <= 0)
        c->l2_bytes = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (c->l3_bytes <= 0)
        c->l3_bytes = sysconf(_SC_LEVEL3_CACHE_SIZE);
    /* Sensible floors so tiling code never divides by zero on an odd hypervisor. */
    if (c->l1d_bytes <= 0)
        c->l1d_bytes = 32 * 1024;
    if (c->l2_bytes <= 0)
        c->l2_bytes = 512 * 1024;
    if (c->l3_bytes < 0)
        c->l3_bytes = 0;
}

static void read_features(struct vox_cpu *c)
{
    unsigned a, b, cx, d;
    __cpuid(0, a, b, cx, d);
    unsigned max_leaf = a;
    memcpy(c->vendor, &b, 4);
    memcpy(c->vendor + 4, &d, 4);
    memcpy(c->vendor + 8, &cx, 4);
    c->vendor[12] = '\0';
    __cpuid(1, a, b, cx, d);
    unsigned fam = (a >> 8) & 0xf, mod = (a >> 4) & 0xf;
    if (fam == 0xf)
        fam += (a >> 20) & 0xff;
    if (fam == 0x6 || fam >= 0xf)
        mod |= ((a >> 16) & 0xf) << 4;
    c->family = (int)fam;
    c->model_id = (int)mod;
    c->sse42 = (cx >> 20) & 1;
    c->fma = (cx >> 12) & 1;
    c->avx = (cx >> 28) & 1;
    bool osxsave = (cx >> 27) & 1;
    if (osxsave) {
        uint64_t xcr0 = read_xcr0();
        c->os_avx = (xcr0 & 0x6) == 0x6;
        c->os_avx512 = c->os_avx && (xcr0 & 0xe0) == 0xe0;
    }
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, a, b, cx, d);
        c->avx2 = (b >> 5) & 1;
        c->bmi2 = (b >> 8) & 1;
        c->avx512f = (b >> 16) & 1;
        c->avx512dq = (b >> 17) & 1;
        c->avx512bw = (b >> 30) & 1;
        c->avx512vl = (b >> 31) & 1;
        c->avx512vnni = (cx >> 11) & 1;
    }
}

enum vox_status vox_cpu_detect(struct vox_cpu *c, const char *isa_cap, char *err,
                               size_t err_len)
{
    memset(c, 0, sizeof *c);
    read_features(c);
    read_brand(c);
    read_caches(c);
    cpu_set_t set;
    c->cores = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    if (c->cores < 1)
        c->cores = 1;
    c->isa_max = VOX_ISA_REF;
    if (c->avx2 && c->fma && c->os_avx)
        c->isa_max = VOX_ISA_AVX2;
    if (c->isa_max == VOX_ISA_AVX2 && c->avx512f && c->avx512bw && c->avx512vl &&
        c->avx512dq && c->os_avx512)
        c->isa_max = VOX_ISA_AVX512;
    c->isa = c->isa_max;
    if (isa_cap && *isa_cap) {
        int want = -1;
        for (int i = 0; i < 3; i++)
            if (strcmp(isa_cap, isa_names[i]) == 0)
                want = i;
        if (want < 0) {
            snprintf(err, err_len, "VOX_ISA=%s: expected ref, avx2 or avx512", isa_cap);
            return VOX_INVALID_ARG;
        }
        /* A cap above what the machine has is honoured as "the best there is": scripts that
         * set VOX_ISA=avx512 must still run on an AVX2-only machine. */
        if (want < (int)c->isa)
            c->isa = (enum vox_isa)want;
    }
    return VOX_OK;
}
