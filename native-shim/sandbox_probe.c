// A stand-in for vfsd under its seccomp filter (tests/VirtioFs.Integration.Tests/SandboxTests.cs): linked with the
// same sandbox.o, so the constructor applies the plan in VFSD_SANDBOX before main(), then main() makes the one
// syscall named by argv[1]. Never installed; built on demand by `make build/sandbox_probe`.
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 2) return 2;
    if (!strcmp(argv[1], "ptrace")) ptrace(PTRACE_TRACEME, 0, 0, 0);
    else if (!strcmp(argv[1], "getpid")) (void)getpid();
    else return 2;
    printf("survived %s\n", argv[1]);
    return 0;
}
