// Signs an imgproxy path and prints the imgproxy-cache key of the signed path.
//
// Usage: IMGPROXY_KEY=hex IMGPROXY_SALT=hex [IMGPROXY_SIGNATURE_SIZE=32] [S3_FOLDER=prefix] node sign.js PATH
// Prints two lines: the signed path (/signature/options/source) and its object key.
//
// With format negotiation (IMGPROXY_ENFORCE_*, or IMGPROXY_AUTO_* and no format in the URL),
// the proxy stores what browsers that decode AVIF get under KEY-avif-webp and what WebP-only ones get
// under KEY-webp (with only one format negotiated, just that one: KEY-webp or KEY-avif). A page
// offers them first, falling back to the proxy once (README, "Serving from the bucket"):
//   <picture>
//     <source type="image/avif" srcset="BUCKET_URL/KEY-avif-webp">
//     <source type="image/webp" srcset="BUCKET_URL/KEY-webp">
//     <img src="BUCKET_URL/KEY" data-proxy="PROXY_URL/SIGNED_PATH" onerror="...">
//   </picture>
import { createHash, createHmac } from "node:crypto";

export function signPath(path: string, keyHex: string, saltHex: string, size = 32): string {
  const digest = createHmac("sha256", Buffer.from(keyHex, "hex"))
    .update(Buffer.from(saltHex, "hex"))
    .update(path)
    .digest()
    .subarray(0, size);
  // base64url without padding, which is what imgproxy expects.
  return `/${digest.toString("base64url")}${path}`;
}

export function cacheKey(signedPath: string, prefix = ""): string {
  return prefix + createHash("md5").update(signedPath).digest("hex");
}

const path = process.argv[2];
const signed = signPath(
  path,
  process.env.IMGPROXY_KEY ?? "",
  process.env.IMGPROXY_SALT ?? "",
  Number(process.env.IMGPROXY_SIGNATURE_SIZE ?? "32"),
);
console.log(signed);
console.log(cacheKey(signed, process.env.S3_FOLDER ?? ""));
