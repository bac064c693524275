/*
 * xattrs: prints the extended attributes of every entry under the given trees, for guest tests (busybox has no
 * getfattr). One line per entry that has any: "@@X <path relative to its root> <name>=<HEX>;<name>=<HEX>...",
 * names sorted bytewise, values as uppercase hex, symlinks not followed (llistxattr/lgetxattr, xattr(7)).
 * An entry whose attributes cannot be read prints "@@X <path> errno <n>" so the host sees the failure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

#define LIST_MAX 65536  /* XATTR_LIST_MAX */
#define VALUE_MAX 65536 /* XATTR_SIZE_MAX */

static size_t root_len;
static char list[LIST_MAX];
static unsigned char value[VALUE_MAX];

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int visit(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st; (void)type; (void)ftw;
    const char *rel = path[root_len] == '/' ? path + root_len + 1 : path + root_len;
    if (*rel == '\0') rel = ".";
    ssize_t n = llistxattr(path, list, sizeof list);
    if (n < 0) { printf("@@X %s errno %d\n", rel, errno); return 0; }
    if (n == 0) return 0;
    static char *names[LIST_MAX / 2];
    size_t count = 0;
    for (char *p = list; p < list + n; p += strlen(p) + 1) names[count++] = p;
    qsort(names, count, sizeof names[0], by_name);
    printf("@@X %s ", rel);
    for (size_t i = 0; i < count; i++) {
        ssize_t v = lgetxattr(path, names[i], value, sizeof value);
        printf("%s%s=", i ? ";" : "", names[i]);
        if (v < 0) { printf("errno"); continue; }
        for (ssize_t j = 0; j < v; j++) printf("%02X", value[j]);
    }
    putchar('\n');
    return 0;
}

int main(int argc, char **argv)
{
    int rc = 0;
    for (int i = 1; i < argc; i++) {
        root_len = strlen(argv[i]);
        if (nftw(argv[i], visit, 32, FTW_PHYS) != 0) { fprintf(stderr, "xattrs: %s: %s\n", argv[i], strerror(errno)); rc = 1; }
    }
    return rc;
}
