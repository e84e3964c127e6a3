// Drawn regions (ROI, ignore zones, named regions) painted on a canvas over a frame; used by the operator screen and the setup page.
window.Regions = (function () {
  "use strict";
  const STYLE = {
    roi: { stroke: "#36c5f0", fill: null, dash: [10, 6] },
    ignore: { stroke: "#9aa4b1", fill: "rgba(154,164,177,0.30)", dash: [4, 4] },
    region: { stroke: "#f2c94c", fill: "rgba(242,201,76,0.12)", dash: [] },
  };
  function path(ctx, pts, sx, sy, close) {
    ctx.beginPath();
    pts.forEach(([x, y], i) => (i ? ctx.lineTo(x * sx, y * sy) : ctx.moveTo(x * sx, y * sy)));
    if (close) ctx.closePath();
  }
  function poly(ctx, kind, pts, label, sx, sy) {
    const s = STYLE[kind];
    path(ctx, pts, sx, sy, true);
    if (s.fill) { ctx.fillStyle = s.fill; ctx.fill(); }
    ctx.setLineDash(s.dash);
    ctx.lineWidth = 2;
    ctx.strokeStyle = s.stroke;
    ctx.stroke();
    ctx.setLineDash([]);
    if (label) {
      ctx.font = "bold 14px 'DejaVu Sans', Arial, sans-serif";
      ctx.fillStyle = s.stroke;
      ctx.fillText(label, pts[0][0] * sx + 4, pts[0][1] * sy + 16);
    }
  }
  // spec: {roi, ignore: [{name, points}], regions: [{name, points, reject_conf, min_area_mm2}]}; sx, sy: canvas px per frame px
  function draw(ctx, spec, sx, sy) {
    if (!spec) return;
    if (spec.roi) poly(ctx, "roi", spec.roi, "ROI", sx, sy);
    for (const z of spec.ignore || []) poly(ctx, "ignore", z.points, "ignore " + (z.name || ""), sx, sy);
    for (const r of spec.regions || []) poly(ctx, "region", r.points, r.name, sx, sy);
  }
  return { draw, path, STYLE };
})();
