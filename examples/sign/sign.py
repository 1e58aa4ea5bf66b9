#!/usr/bin/env python3
"""Signs an imgproxy path and prints the imgproxy-cache key of the signed path.

Usage: IMGPROXY_KEY=hex IMGPROXY_SALT=hex [IMGPROXY_SIGNATURE_SIZE=32] [S3_FOLDER=prefix] sign.py PATH
Prints two lines: the signed path (/signature/options/source) and its object key.

With format negotiation (IMGPROXY_ENFORCE_*, or IMGPROXY_AUTO_* and no format in the URL),
the proxy stores what browsers that decode AVIF get under KEY-avif-webp and what WebP-only ones get
under KEY-webp (with only one format negotiated, just that one: KEY-webp or KEY-avif). A page
offers them first, falling back to the proxy once (README, "Serving from the bucket"):
  <picture>
    <source type="image/avif" srcset="BUCKET_URL/KEY-avif-webp">
    <source type="image/webp" srcset="BUCKET_URL/KEY-webp">
    <img src="BUCKET_URL/KEY" data-proxy="PROXY_URL/SIGNED_PATH" onerror="...">
  </picture>
"""
import base64
import hashlib
import hmac
import os
import sys

key = bytes.fromhex(os.environ["IMGPROXY_KEY"])
salt = bytes.fromhex(os.environ["IMGPROXY_SALT"])
size = int(os.environ.get("IMGPROXY_SIGNATURE_SIZE", "32"))
path = sys.argv[1]

digest = hmac.new(key, salt + path.encode(), hashlib.sha256).digest()[:size]
signature = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
signed = f"/{signature}{path}"
print(signed)
print(os.environ.get("S3_FOLDER", "") + hashlib.md5(signed.encode()).hexdigest())
