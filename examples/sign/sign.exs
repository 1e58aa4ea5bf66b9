# Signs an imgproxy path and prints the imgproxy-cache key of the signed path.
#
# Usage: IMGPROXY_KEY=hex IMGPROXY_SALT=hex [IMGPROXY_SIGNATURE_SIZE=32] [S3_FOLDER=prefix] elixir sign.exs PATH
# Prints two lines: the signed path (/signature/options/source) and its object key.
#
# With format negotiation (IMGPROXY_ENFORCE_*, or IMGPROXY_AUTO_* and no format in the URL),
# the proxy stores what browsers that decode AVIF get under KEY-avif-webp and what WebP-only ones get
# under KEY-webp (with only one format negotiated, just that one: KEY-webp or KEY-avif). A page
# offers them first, falling back to the proxy once (README, "Serving from the bucket"):
#   <picture>
#     <source type="image/avif" srcset="BUCKET_URL/KEY-avif-webp">
#     <source type="image/webp" srcset="BUCKET_URL/KEY-webp">
#     <img src="BUCKET_URL/KEY" data-proxy="PROXY_URL/SIGNED_PATH" onerror="...">
#   </picture>
#
# Note Base.url_encode64 with padding: false. Standard base64 (Base.encode64), as some older
# snippets use, puts `+` and `/` into signatures, which imgproxy rejects.
[path] = System.argv()
key = Base.decode16!(System.fetch_env!("IMGPROXY_KEY"), case: :mixed)
salt = Base.decode16!(System.fetch_env!("IMGPROXY_SALT"), case: :mixed)
size = String.to_integer(System.get_env("IMGPROXY_SIGNATURE_SIZE", "32"))

signature =
  :crypto.mac(:hmac, :sha256, key, salt <> path)
  |> binary_part(0, size)
  |> Base.url_encode64(padding: false)

signed = "/" <> signature <> path
IO.puts(signed)
IO.puts(System.get_env("S3_FOLDER", "") <> Base.encode16(:crypto.hash(:md5, signed), case: :lower))
