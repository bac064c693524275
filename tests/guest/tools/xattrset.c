/*
 * xattrset: sets (or, with -x, removes) one extended attribute, for guest tests (busybox has no setfattr).
 *   xattrset PATH NAME VALUE    prints "@@SETX NAME 0" on success, "@@SETX NAME <errno>" on failure
 *   xattrset -x PATH NAME       the same for removexattr, as "@@RMX NAME <errno or 0>"
 *   xattrset -g PATH NAME       getxattr, as "@@GETX NAME <errno or 0>"
 * Always exits 0: the errno is the result the host checks (setxattr(2), removexattr(2), getxattr(2)).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/xattr.h>

int main(int argc, char **argv)
{
    static char value[65536];
    if (argc == 4 && strcmp(argv[1], "-x") == 0) {
        printf("@@RMX %s %d\n", argv[3], removexattr(argv[2], argv[3]) == 0 ? 0 : errno);
    } else if (argc == 4 && strcmp(argv[1], "-g") == 0) {
        printf("@@GETX %s %d\n", argv[3], getxattr(argv[2], argv[3], value, sizeof value) >= 0 ? 0 : errno);
    } else if (argc == 4) {
        printf("@@SETX %s %d\n", argv[2], setxattr(argv[1], argv[2], argv[3], strlen(argv[3]), 0) == 0 ? 0 : errno);
    } else {
        fprintf(stderr, "usage: xattrset PATH NAME VALUE | -x PATH NAME | -g PATH NAME\n");
        return 2;
    }
    return 0;
}
