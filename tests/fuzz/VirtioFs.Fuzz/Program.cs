using SharpFuzz;
using VirtioFs.Fuzz;

// The long-run driver. Modes:
//   VirtioFs.Fuzz TARGET                 under afl-fuzz: SharpFuzz's out-of-process loop, one input per afl round
//   VirtioFs.Fuzz TARGET --seeds DIR     write the target's seeds (valid inputs) into DIR
//   VirtioFs.Fuzz TARGET --replay PATH.. run files (or every file of directories) and report the first failure
//   VirtioFs.Fuzz TARGET --sweep N SEED  run N mutations of the seeds, as the CI replay does
// Every mode applies the same checks (FuzzRunner.RunOne); an exception escaping is the crash afl records.
if (args.Length < 1)
{
    Console.Error.WriteLine($"usage: VirtioFs.Fuzz TARGET [--seeds DIR | --replay PATH... | --sweep N SEED]; targets: {string.Join(", ", FuzzTargets.Names)}");
    return 2;
}
string mode = args.Length > 1 ? args[1] : "--afl";
if (mode == "--afl")
{
    // The target is made inside the loop: its constructor runs instrumented code (warm-up inputs), and SharpFuzz's
    // trace map exists only once the loop has started (instrumented code before that aborts the fork server).
    IFuzzTarget? lazy = null;
    Fuzzer.OutOfProcess.Run(stream =>
    {
        lazy ??= FuzzTargets.Create(args[0]);
        using var buffer = new MemoryStream();
        stream.CopyTo(buffer);
        FuzzRunner.RunOne(lazy, buffer.GetBuffer().AsSpan(0, (int)buffer.Length));
    });
    return 0;
}
using IFuzzTarget target = FuzzTargets.Create(args[0]);
switch (mode)
{
    case "--seeds":
        Directory.CreateDirectory(args[2]);
        foreach (var (name, data) in target.Seeds())
        {
            File.WriteAllBytes(Path.Combine(args[2], "seed-" + name), data);
        }
        return 0;
    case "--replay":
    {
        int ran = 0;
        foreach (string path in args.Skip(2).SelectMany(p => Directory.Exists(p) ? Directory.GetFiles(p).Order() : (IEnumerable<string>)[p]))
        {
            try
            {
                FuzzRunner.RunOne(target, File.ReadAllBytes(path));
                ran++;
                if (target is VhostUserTarget v)
                {
                    Console.WriteLine($"{path}: {v.LastOutcome}");
                }
            }
            catch (Exception e)
            {
                Console.Error.WriteLine($"{path}: {e}");
                return 1;
            }
        }
        Console.WriteLine($"{target.Name}: {ran} inputs replayed, no finding");
        return 0;
    }
    case "--sweep":
    {
        int count = int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture);
        var mutator = new Mutator(args.Length > 3 ? int.Parse(args[3], System.Globalization.CultureInfo.InvariantCulture) : 1);
        var seeds = target.Seeds().Select(s => s.Data).ToList();
        for (int i = 0; i < count; i++)
        {
            byte[] input = mutator.Mutate(seeds, target.MaxInput);
            try
            {
                FuzzRunner.RunOne(target, input);
            }
            catch (Exception e)
            {
                string path = Path.GetFullPath($"finding-{target.Name}-{i}");
                File.WriteAllBytes(path, input);
                Console.Error.WriteLine($"input {i} (saved as {path}): {e}");
                return 1;
            }
        }
        Console.WriteLine($"{target.Name}: {count} mutations, no finding");
        return 0;
    }
    default:
        Console.Error.WriteLine($"unknown mode {mode}");
        return 2;
}
