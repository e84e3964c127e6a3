// Heat maps of no-labels inspectors, drawn over part images (operator screen, review editor).
// The station sends a grayscale PNG covering the whole frame (0 normal, 128 = the decision threshold,
// 255 = twice it or more). It is coloured here with a LUT: transparent below half the threshold, then
// blue -> cyan -> yellow (at the threshold) -> orange -> red (twice the threshold), more opaque as it heats.
"use strict";
window.Heat = (function () {
  const SHOW_FROM = 64;  // half the threshold: cooler pixels stay transparent
  const STOPS = [  // t in [0, 1] from SHOW_FROM to 255; [t, r, g, b, alpha]
    [0.0, 40, 90, 255, 0.35],
    [0.17, 0, 220, 255, 0.45],
    [0.335, 255, 230, 0, 0.6],
    [0.67, 255, 120, 0, 0.68],
    [1.0, 255, 0, 0, 0.75],
  ];
  const LUT = (function () {
    const lut = new Uint8ClampedArray(256 * 4);
    for (let v = SHOW_FROM; v < 256; v++) {
      const t = (v - SHOW_FROM) / (255 - SHOW_FROM);
      let i = 0;
      while (i < STOPS.length - 2 && t > STOPS[i + 1][0]) i++;
      const a = STOPS[i], b = STOPS[i + 1];
      const f = Math.min(1, Math.max(0, (t - a[0]) / (b[0] - a[0])));
      for (let c = 1; c <= 4; c++) lut[v * 4 + c - 1] = (a[c] + (b[c] - a[c]) * f) * (c === 4 ? 255 : 1);
    }
    return lut;
  })();

  // The coloured heat map as a canvas at the map's resolution (stretch it over the image), or null when
  // the station has none (404) or it cannot be read.
  async function load(url) {
    let res;
    try { res = await fetch(url, { credentials: "same-origin" }); } catch (e) { return null; }
    if (!res.ok) return null;
    try {
      const bmp = await createImageBitmap(await res.blob());
      const c = document.createElement("canvas");
      c.width = bmp.width;
      c.height = bmp.height;
      const ctx = c.getContext("2d");
      ctx.drawImage(bmp, 0, 0);
      const data = ctx.getImageData(0, 0, c.width, c.height);
      const px = data.data;
      let hot = 0;
      for (let i = 0; i < px.length; i += 4) {
        const v = px[i] * 4;  // gray: R = G = B
        px[i] = LUT[v]; px[i + 1] = LUT[v + 1]; px[i + 2] = LUT[v + 2]; px[i + 3] = LUT[v + 3];
        if (LUT[v + 3]) hot++;
      }
      ctx.putImageData(data, 0, 0);
      c.dataset.hotPixels = String(hot);
      return c;
    } catch (e) {
      return null;
    }
  }

  // Draw ``heat`` (from load) over the image rectangle (x, y, w, h) of ``ctx``, smoothed.
  function draw(ctx, heat, x, y, w, h) {
    if (!heat) return;
    ctx.save();
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(heat, x, y, w, h);
    ctx.restore();
  }

  function fmtScore(v) { return v === null || v === undefined ? "-" : Number(v).toFixed(2); }

  return { load, draw, fmtScore, LUT, SHOW_FROM };
})();
