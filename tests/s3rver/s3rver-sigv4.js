'use strict';
// s3rver (npm, 3.7.1) with AWS Signature V4 verified. s3rver checks the access key id of a V4 request but not its
// signature (lib/middleware/authentication.js: "Signature version 4 calculation is unimplemeneted"), so a client
// signing with the wrong secret would pass. This launcher puts one Koa middleware in front of s3rver's router that
// recomputes the signature with AWS's own signer (@smithy/signature-v4, the AWS SDK for JavaScript's) from the
// secret of s3rver's configured account (lib/models/account.js, S3RVER/S3RVER), and answers SignatureDoesNotMatch
// as S3 does. Unsigned requests, V2 and presigned requests are left to s3rver.
//
// Usage (NODE_PATH = out/s3rver/node_modules): node s3rver-sigv4.js DIR ADDRESS PORT BUCKET [SERVICE_ENDPOINT]
const S3rver = require('s3rver');
const AWSAccount = require('s3rver/lib/models/account');
const S3Error = require('s3rver/lib/models/error');
const { SignatureV4 } = require('@smithy/signature-v4');
const { Sha256 } = require('@aws-crypto/sha256-js');

const [dir, address, port, bucket, serviceEndpoint] = process.argv.slice(2);
const AUTH = /^AWS4-HMAC-SHA256 Credential=([^/,]+)\/(\d{8})\/([^/,]+)\/([^/,]+)\/aws4_request, ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$/;

function amzDate(s) {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s || '');
  return m ? new Date(Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6])) : null;
}

async function verifyV4(ctx, next) {
  const auth = ctx.get('authorization');
  if (!auth.startsWith('AWS4-HMAC-SHA256')) return next();
  const m = AUTH.exec(auth);
  if (!m) throw new S3Error('AuthorizationHeaderMalformed', 'The authorization header is malformed.');
  const [, keyId, , region, service, signedHeaders, provided] = m;
  const account = AWSAccount.registry.get(keyId);
  if (!account) return next(); // s3rver answers InvalidAccessKeyId
  const date = amzDate(ctx.get('x-amz-date'));
  if (!date) throw new S3Error('AccessDenied', 'AWS authentication requires a valid Date or x-amz-date header');
  // What the client signed: the request target as received (Koa's originalUrl: s3rver's vhost middleware has
  // already rewritten ctx.url and req.url to /BUCKET/KEY) and the named headers.
  const raw = ctx.originalUrl;
  const q = raw.indexOf('?');
  const query = {};
  for (const [k, v] of new URLSearchParams(q < 0 ? '' : raw.slice(q + 1))) {
    query[k] = k in query ? [].concat(query[k], v) : v;
  }
  const names = signedHeaders.split(';');
  const headers = {};
  for (const h of names) headers[h] = ctx.get(h);
  const signer = new SignatureV4({
    credentials: { accessKeyId: keyId, secretAccessKey: account.accessKeys.get(keyId) },
    region, service, sha256: Sha256, uriEscapePath: false, applyChecksum: false,
  });
  const signed = await signer.sign(
    { method: ctx.method, protocol: 'http:', hostname: ctx.get('host'), path: q < 0 ? raw : raw.slice(0, q), query, headers },
    { signingDate: date, signableHeaders: new Set(names) });
  const expected = /Signature=([0-9a-f]{64})/.exec(signed.headers.authorization)[1];
  if (expected !== provided) {
    throw new S3Error('SignatureDoesNotMatch',
      'The request signature we calculated does not match the signature you provided. Check your key and signing method.',
      { AWSAccessKeyId: keyId });
  }
  return next();
}

const server = new S3rver({
  directory: dir, address, port: Number(port), silent: true,
  configureBuckets: [{ name: bucket }],
  ...(serviceEndpoint ? { serviceEndpoint } : {}),
});
// Koa runs app.middleware in order; the last entry is s3rver's router (lib/s3rver.js), which authenticates.
server.middleware.splice(server.middleware.length - 1, 0, verifyV4);
server.run().then(a => console.log(`listening on ${a.address}:${a.port}`), e => { console.error(e); process.exit(1); });
