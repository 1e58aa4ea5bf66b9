// imgproxy-cache client helper: load each image from the bucket (or CDN) first, in the best
// format the browser decodes when the upstream negotiates formats, and fall back to the proxy
// once when the object is not stored yet. No dependencies, no build step.
//
//   import { cachedImage, upgradeAll } from "./imgproxy-cache.js";
//   // `url` is what `imgproxy-cache url --json` printed: {cached_url, proxy_url, variants}.
//   document.body.append(cachedImage({ ...url, alt: "A rocket" }));
//   // or mark up a <picture> as in the README and call upgradeAll().
//
// Each image is a <picture>: one <source type srcset> per entry of `variants` (AVIF, then
// WebP), and an <img> with the baseline `cached_url`. The browser loads the first type it
// decodes. When that object is missing, the sources are removed (a <source> that still matches
// would keep the browser on the missing object) and the <img> loads `proxy_url`: the proxy
// renders it for the browser's own Accept and stores that same variant for the next visitor.
// Each image tries at most two URLs: a proxy that also fails leaves the image in the broken
// state (class `imgproxy-cache-broken`, data-source="broken") instead of looping.

const BROKEN_CLASS = "imgproxy-cache-broken";

/** Wires the fallback onto an <img> (in a <picture> or not) and starts loading `cached`. */
export function attach(img, cached, proxy) {
  img.dataset.source = "cache";
  img.addEventListener("error", function fallback() {
    if (img.dataset.source === "cache") {
      // Not in the bucket yet: the proxy renders it, and stores it for the next visitor.
      img.dataset.source = "proxy";
      const picture = img.parentElement;
      if (picture?.localName === "picture") {
        for (const source of picture.querySelectorAll(":scope > source")) source.remove();
      }
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

/** A new <picture> that loads the best stored variant and falls back to `proxy_url` once. */
export function cachedImage({ cached_url, proxy_url, variants = [], alt = "", width, height }) {
  const picture = document.createElement("picture");
  for (const variant of variants) {
    const source = document.createElement("source");
    source.type = variant.type;
    source.srcset = variant.cached_url;
    picture.append(source);
  }
  const img = document.createElement("img");
  img.alt = alt;
  if (width) img.width = width;
  if (height) img.height = height;
  picture.append(img);
  attach(img, cached_url, proxy_url);
  return picture;
}

/**
 * Upgrades every `<img data-cached data-proxy>` under `root`; the `<source data-srcset>` of
 * its <picture> get their `srcset` at the same time, so nothing loads before the fallback is
 * wired.
 */
export function upgradeAll(root = document) {
  for (const img of root.querySelectorAll("img[data-cached][data-proxy]:not([data-source])")) {
    const picture = img.parentElement;
    if (picture?.localName === "picture") {
      for (const source of picture.querySelectorAll(":scope > source[data-srcset]")) {
        source.srcset = source.dataset.srcset;
      }
    }
    attach(img, img.dataset.cached, img.dataset.proxy);
  }
}
