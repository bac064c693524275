[assembly: CollectionBehavior(DisableTestParallelization = true)] // /dev/fuse mounts and the passthrough's umask are process-wide
