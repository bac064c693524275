using Org.BouncyCastle.Crypto.Parameters;
using Org.BouncyCastle.Crypto.Signers;

namespace VirtioFs.Rafs;

/// <summary>Ed25519 signatures over the merkle root (RFC 8032, BouncyCastle). Keys are files holding the raw
/// 32-byte private seed or public key, or the same as hex.</summary>
public static class Signing
{
    public static byte[] Sign(byte[] privateKey, byte[] message)
    {
        var s = new Ed25519Signer();
        s.Init(true, new Ed25519PrivateKeyParameters(privateKey, 0));
        s.BlockUpdate(message, 0, message.Length);
        return s.GenerateSignature();
    }

    public static bool Verify(byte[] publicKey, byte[] message, byte[] signature)
    {
        var s = new Ed25519Signer();
        s.Init(false, new Ed25519PublicKeyParameters(publicKey, 0));
        s.BlockUpdate(message, 0, message.Length);
        return s.VerifySignature(signature);
    }

    public static byte[] PublicKeyOf(byte[] privateKey) => new Ed25519PrivateKeyParameters(privateKey, 0).GeneratePublicKey().GetEncoded();

    /// <summary>Generates a key pair: (private seed, public key).</summary>
    public static (byte[] Private, byte[] Public) Generate()
    {
        var seed = System.Security.Cryptography.RandomNumberGenerator.GetBytes(32);
        return (seed, PublicKeyOf(seed));
    }

    public static byte[] LoadKey(string path)
    {
        var raw = File.ReadAllBytes(path);
        if (raw.Length == 32) return raw;
        var text = System.Text.Encoding.ASCII.GetString(raw).Trim();
        if (text.Length == 64)
        {
            try { return Convert.FromHexString(text); } catch (FormatException) { }
        }
        throw new RafsFormatException($"key file '{path}' is neither 32 raw bytes nor 64 hex digits");
    }
}
