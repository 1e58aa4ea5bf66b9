// imgproxy-cache client helper: load each image from the bucket (or CDN) first, and fall back
// to the proxy once when the object is not stored yet. No dependencies, no build step.
//
//   import { cachedImage, upgradeAll } from "./imgproxy-cache.js";
//   document.body.append(cachedImage({ cached, proxy, alt: "A rocket" }));
//   // or mark up <img data-cached="…" data-proxy="…" alt="…"> and call upgradeAll().
//
// `cached` and `proxy` are what `imgproxy-cache url --json` prints as cached_url and proxy_url.
// Each <img> tries at most two URLs: a proxy that also fails leaves the image in the broken
// state (class `imgproxy-cache-broken`, data-source="broken") instead of looping.

const BROKEN_CLASS = "imgproxy-cache-broken";

/** Wires the fallback onto an existing <img> and starts loading from the bucket. */
export function attach(img, cached, proxy) {
  img.dataset.source = "cache";
  img.addEventListener("error", function fallback() {
    if (img.dataset.source === "cache") {
      // Not in the bucket yet: the proxy renders it, and stores it for the next visitor.
      img.dataset.source = "proxy";
      img.src = proxy;
    } else {
      img.dataset.source = "broken";
      img.classList.add(BROKEN_CLASS);
      img.removeEventListener("error", fallback);
    }
  });
  img.src = cached;
  return img;
}

/** A new <img> that loads `cached` and falls back to `proxy` once. */
export function cachedImage({ cached, proxy, alt = "", width, height }) {
  const img = document.createElement("img");
  img.alt = alt;
  if (width) img.width = width;
  if (height) img.height = height;
  return attach(img, cached, proxy);
}

/** Upgrades every `<img data-cached data-proxy>` under `root`. */
export function upgradeAll(root = document) {
  for (const img of root.querySelectorAll("img[data-cached][data-proxy]:not([data-source])")) {
    attach(img, img.dataset.cached, img.dataset.proxy);
  }
}
