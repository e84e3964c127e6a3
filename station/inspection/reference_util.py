"""Helpers of the reference inspector: alignment, brightness normalisation, the part mask."""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np

log = logging.getLogger("station.inspection.reference")

BLOCK_PX = 16  # brightness-fit block size at working scale
_ECC_CRITERIA = (
    cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS,
    6,
    1e-4,
)  # 6 steps: as accurate as 10 here, half the time


def level_map(src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """3x3 affine from pixel-centre coords of a (w, h) image to those of its resize to dst (w, h)."""
    fx, fy = dst[0] / src[0], dst[1] / src[1]
    return np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1]], np.float64)


class Aligner:
    """Estimates the warp template -> frame (working-scale pixel centres).

    ``roi`` (working pixels x0, y0, x1, y1) limits the ECC template to the
    part's box (plus a small margin): faster, and the moving conveyor around
    the part does not pull the estimate.

    ``patches`` > 0 refines the pose at working scale: up to that many
    ``patch_px`` template patches with 2-D texture (one per cell of a grid over
    ``roi``) are cut from the frame resampled through the coarse pose, each
    patch's residual shift is measured by phase correlation, and a rigid
    correction (shift + rotation) is fitted to those shifts, dropping outliers
    (a defect in a patch): sub-pixel accuracy at working scale for ~1 ms,
    where the coarse level alone is good to ~1/8 of a working pixel per level
    pixel, i.e. a pixel or two at full resolution.
    """

    def __init__(
        self,
        ref_work: np.ndarray,
        mode: str,
        tiny_size: tuple[int, int],
        roi: tuple[int, int, int, int] | None = None,
        patches: int = 0,
        patch_px: int = 64,
    ):
        self.mode = mode
        h, w = ref_work.shape
        self.work_size = (w, h)
        self.tiny_size = tiny_size
        self.tref = cv2.resize(ref_work, tiny_size, interpolation=cv2.INTER_AREA).astype(np.float32)
        self.win = cv2.createHanningWindow(tiny_size, cv2.CV_32F)
        self.up = np.linalg.inv(level_map(self.work_size, tiny_size))  # tiny -> work
        self.down = level_map(self.work_size, tiny_size)  # work -> tiny
        tx0, ty0, tx1, ty1 = 0, 0, tiny_size[0], tiny_size[1]
        if roi is not None:
            fx, fy = tiny_size[0] / w, tiny_size[1] / h
            tx0, ty0 = max(int(roi[0] * fx) - 2, 0), max(int(roi[1] * fy) - 2, 0)
            tx1, ty1 = (
                min(int(math.ceil(roi[2] * fx)) + 2, tiny_size[0]),
                min(int(math.ceil(roi[3] * fy)) + 2, tiny_size[1]),
            )
            if (tx1 - tx0) < 16 or (ty1 - ty0) < 16:
                tx0, ty0, tx1, ty1 = 0, 0, tiny_size[0], tiny_size[1]
        self.ecc_off = (tx0, ty0)
        self.ecc_tpl = np.ascontiguousarray(self.tref[ty0:ty1, tx0:tx1])
        self.failures = 0
        self.patches = (
            _pick_patches(ref_work.astype(np.float32), roi, patches, patch_px) if patches > 0 and mode != "none" else []
        )
        if self.patches:
            self.pwin = cv2.createHanningWindow((patch_px, patch_px), cv2.CV_32F)
            self.patch_px = patch_px

    def estimate(self, work: np.ndarray) -> np.ndarray:
        """2x3 float64 warp W with frame(W p) ~ template(p), working pixels."""
        if self.mode == "none":
            return np.eye(2, 3)
        tiny = cv2.resize(work, self.tiny_size, interpolation=cv2.INTER_AREA).astype(np.float32)
        # phaseCorrelate applies the window in place (OpenCV 5.0): give it copies
        (dx, dy), _resp = cv2.phaseCorrelate(self.tref.copy(), tiny.copy(), self.win)
        shift = np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1]], np.float64)
        w3 = shift
        if self.mode == "euclidean":
            ox, oy = self.ecc_off
            init = np.array([[1, 0, dx + ox], [0, 1, dy + oy]], np.float32)  # ECC template is the part's box
            try:
                # OpenCV takes None for "no mask"; its stubs' 7-argument overload wants an array there
                _cc, warp = cv2.findTransformECC(self.ecc_tpl, tiny, init, cv2.MOTION_EUCLIDEAN, _ECC_CRITERIA, None, 1)  # type: ignore[call-overload]
                w3 = np.vstack([warp.astype(np.float64), [0, 0, 1]]) @ np.array(
                    [[1, 0, -ox], [0, 1, -oy], [0, 0, 1]], np.float64
                )
            except cv2.error as exc:  # no convergence (no part, wrong product): keep the shift
                self.failures += 1
                log.debug(
                    "ECC did not converge (%s); using the phase-correlation shift", str(exc).splitlines()[0][:120]
                )
        warp = (self.up @ w3 @ self.down)[:2]
        return self._refine(work, warp) if self.patches else warp

    def _refine(self, work: np.ndarray, warp: np.ndarray) -> np.ndarray:
        """``warp`` corrected by a rigid fit to the residual shifts of the texture patches (see the class docstring)."""
        P = self.patch_px
        pts, ds = [], []
        for (px, py), tpl in self.patches:
            w = warp.copy()
            w[:, 2] += warp[:, 0] * px + warp[:, 1] * py
            fr = cv2.warpAffine(
                work, w, (P, P), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
            )
            (dx, dy), resp = cv2.phaseCorrelate(tpl.copy(), fr.astype(np.float32), self.pwin.copy())
            if resp > 0.1 and abs(dx) < P / 4 and abs(dy) < P / 4:
                pts.append((px + (P - 1) / 2, py + (P - 1) / 2))
                ds.append((dx, dy))
        if len(pts) < 3:
            return warp
        p, d = np.asarray(pts, np.float64), np.asarray(ds, np.float64)
        keep = np.ones(len(p), bool)
        for _ in range(3):  # rigid fit of d = t + theta * (-(y - cy), x - cx), dropping outliers
            if keep.sum() < 3:
                return warp
            c = p[keep].mean(0)
            q = p - c
            A = np.zeros((2 * len(p), 3))
            A[0::2, 0], A[1::2, 1] = 1, 1
            A[0::2, 2], A[1::2, 2] = -q[:, 1], q[:, 0]
            sel = np.repeat(keep, 2)
            sol = np.linalg.lstsq(A[sel], d.ravel()[sel], rcond=None)[0]
            res = np.hypot(*(d - (A @ sol).reshape(-1, 2)).T)
            lim = max(3.0 * 1.4826 * float(np.median(res[keep])), 0.3)
            new = res <= lim
            if (new == keep).all():
                break
            keep = new
        tx, ty, th = sol
        ct, st = math.cos(th), math.sin(th)
        # template p -> p + d(p): rotation by th about c, then shift t
        corr = np.array(
            [[ct, -st, c[0] - ct * c[0] + st * c[1] + tx], [st, ct, c[1] - st * c[0] - ct * c[1] + ty], [0, 0, 1]]
        )
        out: np.ndarray = (np.vstack([warp, [0, 0, 1]]) @ corr)[:2]
        return out


def _pick_patches(
    ref: np.ndarray, roi: tuple[int, int, int, int] | None, n: int, P: int
) -> list[tuple[tuple[int, int], np.ndarray]]:
    """Up to ``n`` patches (top-left, P x P float32 pixels) of ``ref`` with the most 2-D texture, one per grid cell
    over ``roi``:
    the patch whose smaller structure-tensor eigenvalue sum is largest in its cell, if it is at least 10 % of the best
    one."""
    h, w = ref.shape
    x0, y0, x1, y1 = roi if roi is not None else (0, 0, w, h)
    if x1 - x0 < P or y1 - y0 < P:
        return []
    gx, gy = cv2.Sobel(ref, cv2.CV_32F, 1, 0), cv2.Sobel(ref, cv2.CV_32F, 0, 1)
    sxx, syy, sxy = (cv2.boxFilter(a, -1, (P, P), normalize=True) for a in (gx * gx, gy * gy, gx * gy))
    lam = (sxx + syy) / 2 - np.sqrt(((sxx - syy) / 2) ** 2 + sxy * sxy)  # at each patch centre
    cols = max(int(round(math.sqrt(n * (x1 - x0) / (y1 - y0)))), 1)
    rows = max(n // cols, 1)
    half = P // 2
    cands = []
    for i in range(rows):
        for j in range(cols):
            cx0 = max(x0 + (x1 - x0) * j // cols, x0 + half)
            cx1 = min(x0 + (x1 - x0) * (j + 1) // cols, x1 - (P - half))
            cy0 = max(y0 + (y1 - y0) * i // rows, y0 + half)
            cy1 = min(y0 + (y1 - y0) * (i + 1) // rows, y1 - (P - half))
            if cx1 <= cx0 or cy1 <= cy0:
                continue
            cell = lam[cy0:cy1, cx0:cx1]
            k = int(np.argmax(cell))
            cy, cx = divmod(k, cell.shape[1])
            cands.append((float(cell.flat[k]), cx0 + cx - half, cy0 + cy - half))
    if not cands:
        return []
    top = max(v for v, _, _ in cands)
    return [
        ((px, py), np.ascontiguousarray(ref[py : py + P, px : px + P]))
        for v, px, py in cands
        if top > 0 and v >= 0.1 * top
    ]


def bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    x, y, w, h = cv2.boundingRect(mask)
    return (x, y, x + w, y + h) if w and h else None


def fit_span(a: int, b: int, size: int, block: int) -> tuple[int, int]:
    """Grow [a, b) about its centre to a multiple of ``block`` inside [0, size) (fast integer-factor resizes)."""
    want = -(-(b - a) // block) * block
    if want > size:
        want = (size // block) * block
        if want == 0:
            return a, b
    a2 = max(min((a + b - want) // 2, size - want), 0)
    return a2, a2 + want


def part_mask(mean: np.ndarray, mode: str = "auto") -> tuple[np.ndarray, bool]:
    """Where to compare, in the template (uint8 0/255), and whether it is a part's outline.

    ``outline``: the filled outline of the part, found against the background
    level of a strip along the image border (whole image, with a warning, if
    none is found). ``full_frame``: the whole image. ``auto``: the outline when
    the border strip is plain background (at most 5 % of it differs from its
    level), the part covers 1 to 95 % of the image and holds 90 % of what
    differs from the background (not one track of a board); else the whole image,
    without a warning (a board that fills the frame has no outline).
    """
    h, w = mean.shape
    out = np.full((h, w), 255, np.uint8)
    if mode == "full_frame":
        return out, False
    b = max(2, min(h, w) // 50)
    border = np.concatenate([mean[:b].ravel(), mean[-b:].ravel(), mean[:, :b].ravel(), mean[:, -b:].ravel()])
    level = float(np.median(border))
    spread = float(np.median(np.abs(border - level))) * 1.4826
    tol = max(4.0 * spread, 12.0)
    plain = float(np.mean(np.abs(border - level) > tol)) <= 0.05
    diff = np.abs(mean - level) > tol
    m = cv2.morphologyEx(diff.astype(np.uint8) * 255, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if contours and (plain or mode == "outline"):
        big = max(contours, key=cv2.contourArea)
        if 0.01 * h * w <= cv2.contourArea(big) <= (0.95 * h * w if mode == "auto" else h * w):
            filled = np.zeros((h, w), np.uint8)
            cv2.drawContours(filled, [big], -1, 255, -1)
            # one part holds (nearly) everything that differs from the background; separate tracks or pads do not
            if mode == "outline" or np.count_nonzero(diff & (filled > 0)) >= 0.9 * np.count_nonzero(diff):
                return filled, True
    if mode == "outline":
        log.warning("reference inspector: no part outline found in the template; comparing the whole frame")
    else:
        log.info(
            "reference inspector: the part fills the frame (no outline on a plain background); comparing the whole "
            "frame"
        )
    return out, False


class Normaliser:
    """Brightness and low-frequency normalisation over one masked region.

    ``brightness``: fit ``gain = a + b*u + c*v`` to the ratios of reference /
    frame block means inside the mask (refit without outlier blocks, so a
    defect does not bend the plane) and multiply.

    ``residual``: ``r = x - ref`` minus a robust low-pass of ``r`` (each
    pixel's ``r`` clipped at +/- ``clip`` before a masked block average, so a
    real defect barely moves the low-pass while slow tint and shading
    differences between parts are removed).
    """

    def __init__(self, ref: np.ndarray, mask: np.ndarray, clip: float, lowpass_px: int):
        h, w = ref.shape
        self.ref = ref
        self.m01 = (mask > 0).astype(np.float32)
        self.size = (w, h)
        self.grid = (max(w // BLOCK_PX, 1), max(h // BLOCK_PX, 1))
        self.ref_blocks = cv2.resize(ref * self.m01, self.grid, interpolation=cv2.INTER_AREA).ravel()
        self.block_ok = cv2.resize(self.m01, self.grid, interpolation=cv2.INTER_AREA).ravel() > 0.5
        gu = (np.arange(self.grid[0], dtype=np.float32) + 0.5) / self.grid[0]
        gv = (np.arange(self.grid[1], dtype=np.float32) + 0.5) / self.grid[1]
        self.block_u = np.broadcast_to(gu[None, :], (self.grid[1], self.grid[0])).ravel()
        self.block_v = np.broadcast_to(gv[:, None], (self.grid[1], self.grid[0])).ravel()
        self.U = np.ascontiguousarray(np.broadcast_to((np.arange(w, dtype=np.float32) + 0.5)[None, :] / w, (h, w)))
        self.V = np.ascontiguousarray(np.broadcast_to((np.arange(h, dtype=np.float32) + 0.5)[:, None] / h, (h, w)))
        self.clip = float(clip)
        self.lp_grid: tuple[int, int] | None = None
        if lowpass_px > 0 and clip > 0:
            self.lp_grid = (max(w // lowpass_px, 1), max(h // lowpass_px, 1))
            cover = cv2.resize(
                cv2.resize(self.m01, self.lp_grid, interpolation=cv2.INTER_AREA),
                self.size,
                interpolation=cv2.INTER_LINEAR,
            )
            self.lp_inv_cover = (1.0 / np.maximum(cover, 0.05)).astype(np.float32)

    def brightness(self, x: np.ndarray) -> np.ndarray:
        """``x`` (float32) times the gain plane that maps it onto the reference's brightness."""
        blocks = cv2.resize(x * self.m01, self.grid, interpolation=cv2.INTER_AREA).ravel()
        ok = self.block_ok & (blocks > 1.0)
        if ok.sum() < 3:
            return x
        ratio = self.ref_blocks[ok] / blocks[ok]
        A = np.stack([np.ones(int(ok.sum()), np.float32), self.block_u[ok], self.block_v[ok]], 1)
        coef = np.linalg.lstsq(A, ratio, rcond=None)[0]
        res = ratio - A @ coef
        keep = np.abs(res) <= 3.0 * float(np.median(np.abs(res))) * 1.4826 + 0.005
        if keep.sum() >= 3 and not keep.all():
            coef = np.linalg.lstsq(A[keep], ratio[keep], rcond=None)[0]
        a, b, c = (float(v) for v in coef)
        return cv2.multiply(x, cv2.addWeighted(self.U, b, self.V, c, a))

    def residual(self, x: np.ndarray) -> np.ndarray:
        """``x - ref`` without its robust low-frequency part (float32)."""
        r = cv2.subtract(x, self.ref)
        if self.lp_grid is None:
            return r
        rc = cv2.multiply(np.clip(r, -self.clip, self.clip), self.m01)
        lp = cv2.resize(
            cv2.resize(rc, self.lp_grid, interpolation=cv2.INTER_AREA), self.size, interpolation=cv2.INTER_LINEAR
        )
        return cv2.subtract(r, cv2.multiply(lp, self.lp_inv_cover))
