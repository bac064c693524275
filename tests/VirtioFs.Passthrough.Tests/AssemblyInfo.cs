[assembly: CollectionBehavior(DisableTestParallelization = true)] // fd counts in /proc/self/fd and the umask are process-wide
