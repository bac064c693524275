global using Xunit;

// The transport is Linux-only (eventfd, memfd, SCM_RIGHTS, Unix socket modes).
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]
