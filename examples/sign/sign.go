// Signs an imgproxy path and prints the imgproxy-cache key of the signed path.
//
// Usage: IMGPROXY_KEY=hex IMGPROXY_SALT=hex [IMGPROXY_SIGNATURE_SIZE=32] [S3_FOLDER=prefix] go run sign.go PATH
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
package main

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
)

func main() {
	key, err := hex.DecodeString(os.Getenv("IMGPROXY_KEY"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "IMGPROXY_KEY:", err)
		os.Exit(2)
	}
	salt, err := hex.DecodeString(os.Getenv("IMGPROXY_SALT"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "IMGPROXY_SALT:", err)
		os.Exit(2)
	}
	size := 32
	if s := os.Getenv("IMGPROXY_SIGNATURE_SIZE"); s != "" {
		if size, err = strconv.Atoi(s); err != nil || size < 1 || size > 32 {
			fmt.Fprintln(os.Stderr, "IMGPROXY_SIGNATURE_SIZE must be 1-32")
			os.Exit(2)
		}
	}
	path := os.Args[1]

	mac := hmac.New(sha256.New, key)
	mac.Write(salt)
	mac.Write([]byte(path))
	// RawURLEncoding: base64url without padding, which is what imgproxy expects.
	signed := "/" + base64.RawURLEncoding.EncodeToString(mac.Sum(nil)[:size]) + path
	fmt.Println(signed)
	fmt.Printf("%s%x\n", os.Getenv("S3_FOLDER"), md5.Sum([]byte(signed)))
}
