using System.Buffers.Binary;

namespace VirtioFs.Fuzz;

/// <summary>
/// A small deterministic mutator for the CI sweep (the long runs use afl++'s): from a seed it flips bits, writes
/// boundary values as 1/2/4/8-byte little-endian integers (the fields of every format here are little-endian), and
/// deletes, duplicates, inserts or splices ranges. Same seed and inputs, same outputs.
/// </summary>
public sealed class Mutator(int seed)
{
    private static readonly ulong[] Interesting =
    [
        0, 1, 2, 7, 8, 16, 40, 64, 127, 128, 255, 256, 4095, 4096, 4097, 32767, 32768, 65535, 65536, 0x7fff_ffff,
        0x8000_0000, 0xffff_fffe, 0xffff_ffff, 1UL << 32, 0x7fff_ffff_ffff_ffff, 0x8000_0000_0000_0000, ulong.MaxValue,
    ];

    private readonly Random _random = new(seed);

    public byte[] Mutate(IReadOnlyList<byte[]> seeds, int maxLength)
    {
        ArgumentNullException.ThrowIfNull(seeds);
        var data = new List<byte>(seeds[_random.Next(seeds.Count)]);
        int rounds = 1 + _random.Next(4);
        for (int i = 0; i < rounds; i++)
        {
            MutateOnce(data, seeds);
        }
        if (data.Count > maxLength)
        {
            data.RemoveRange(maxLength, data.Count - maxLength);
        }
        return data.ToArray();
    }

    private void MutateOnce(List<byte> data, IReadOnlyList<byte[]> seeds)
    {
        int n = data.Count;
        switch (_random.Next(n == 0 ? 1 : 8))
        {
            case 0: // insert random bytes
            {
                var bytes = new byte[1 + _random.Next(16)];
                _random.NextBytes(bytes);
                data.InsertRange(_random.Next(n + 1), bytes);
                break;
            }
            case 1:
                data[_random.Next(n)] ^= (byte)(1 << _random.Next(8));
                break;
            case 2:
                data[_random.Next(n)] = (byte)_random.Next(256);
                break;
            case 3:
            case 4: // a boundary value over an integer field
            {
                int width = 1 << _random.Next(4);
                if (n < width)
                {
                    break;
                }
                int at = _random.Next(n - width + 1);
                if (_random.Next(3) == 0)
                {
                    at &= ~(width - 1); // fields are mostly aligned
                }
                ulong v = Interesting[_random.Next(Interesting.Length)];
                if (_random.Next(4) == 0)
                {
                    v = unchecked((ulong)(-(long)v));
                }
                Span<byte> bytes = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(bytes, v);
                for (int i = 0; i < width; i++)
                {
                    data[at + i] = bytes[i];
                }
                break;
            }
            case 5: // delete a range
            {
                int at = _random.Next(n);
                data.RemoveRange(at, Math.Min(n - at, 1 + _random.Next(64)));
                break;
            }
            case 6: // duplicate a range
            {
                int at = _random.Next(n);
                int len = Math.Min(n - at, 1 + _random.Next(64));
                data.InsertRange(_random.Next(n + 1), data.GetRange(at, len));
                break;
            }
            default: // splice in a piece of another seed
            {
                byte[] other = seeds[_random.Next(seeds.Count)];
                if (other.Length == 0)
                {
                    break;
                }
                int from = _random.Next(other.Length);
                int len = Math.Min(other.Length - from, 1 + _random.Next(256));
                int at = _random.Next(n);
                int replace = Math.Min(len, n - at);
                data.RemoveRange(at, replace);
                data.InsertRange(at, other.AsSpan(from, len).ToArray());
                break;
            }
        }
    }
}
