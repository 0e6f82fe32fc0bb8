"""YOLOv5 loss (CIoU box, IoU-valued objectness, BCE classes) with optional Focal Loss."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

OBJ_BALANCE = (4.0, 1.0, 0.4)  # per-level objectness weight for P3, P4, P5


class FocalLoss(nn.Module):
    """Focal Loss (Lin et al. 2017) wrapped around ``BCEWithLogitsLoss``:
    ``loss = BCE * alpha_t * (1 - p_t) ** gamma``.
    With ``gamma=0`` and ``alpha=None`` it is the BCE itself."""

    def __init__(self, bce: nn.BCEWithLogitsLoss, gamma: float = 1.5, alpha: float | None = 0.25):
        super().__init__()
        self.bce = bce
        self.gamma = gamma
        self.alpha = alpha
        self.reduction = bce.reduction
        self.bce.reduction = "none"

    def forward(self, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        loss = self.bce(pred, true)
        p = torch.sigmoid(pred)
        p_t = true * p + (1 - true) * (1 - p)
        if self.gamma:
            loss = loss * (1.0 - p_t) ** self.gamma
        if self.alpha is not None:
            loss = loss * (true * self.alpha + (1 - true) * (1 - self.alpha))
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss


def bbox_ciou(box1: torch.Tensor, box2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of paired boxes in (cx, cy, w, h); shapes (n, 4) -> (n,)."""
    (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.unbind(-1), box2.unbind(-1)
    b1x1, b1x2, b1y1, b1y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    b2x1, b2x2, b2y1, b2y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = (torch.min(b1x2, b2x2) - torch.max(b1x1, b2x1)).clamp(0) * (
        torch.min(b1y2, b2y2) - torch.max(b1y1, b2y1)
    ).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = torch.max(b1x2, b2x2) - torch.min(b1x1, b2x1)
    ch = torch.max(b1y2, b2y2) - torch.min(b1y1, b2y1)
    c2 = cw**2 + ch**2 + eps
    rho2 = (x2 - x1) ** 2 + (y2 - y1) ** 2
    v = (4 / math.pi**2) * (torch.atan(w2 / (h2 + eps)) - torch.atan(w1 / (h1 + eps))) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


def make_bce(hyp: dict[str, Any], term: str, pos_weight: float, device: torch.device) -> nn.Module:
    """The BCE of one loss term (``obj`` or ``cls``), in Focal Loss when the hyperparameters say so."""
    bce = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([pos_weight], device=device))
    gamma = float(hyp.get("fl_gamma", 0.0))
    terms = hyp.get("fl_terms", ["obj", "cls"])
    if gamma > 0 and term in terms:
        alpha = hyp.get("fl_alpha", 0.25)
        alpha = None if alpha is None or float(alpha) < 0 else float(alpha)
        return FocalLoss(bce, gamma=gamma, alpha=alpha)
    return bce


class YoloLoss:
    """Targets are (image_index, class, cx, cy, w, h), normalised to the input image."""

    def __init__(self, model: nn.Module, hyp: dict[str, Any], imgsz: int):
        detect = model.detect  # type: ignore[attr-defined]
        device = next(model.parameters()).device
        self.nl, self.na, self.nc = detect.nl, detect.na, detect.nc
        self.anchors = detect.anchors  # grid units, (nl, na, 2)
        self.balance = list(OBJ_BALANCE) if self.nl == 3 else [4.0, 1.0, 0.25, 0.06, 0.02][: self.nl]
        scale = 3 / self.nl
        self.box_gain = hyp["box"] * scale
        self.cls_gain = hyp["cls"] * self.nc / 80 * scale
        self.obj_gain = hyp["obj"] * (imgsz / 640) ** 2 * scale
        self.anchor_t = hyp["anchor_t"]
        eps = hyp.get("label_smoothing", 0.0)
        self.cp, self.cn = 1.0 - 0.5 * eps, 0.5 * eps
        self.bce_cls = make_bce(hyp, "cls", hyp.get("cls_pw", 1.0), device)
        self.bce_obj = make_bce(hyp, "obj", hyp.get("obj_pw", 1.0), device)

    def __call__(self, preds: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device = targets.device
        lcls = torch.zeros(1, device=device)
        lbox = torch.zeros(1, device=device)
        lobj = torch.zeros(1, device=device)
        tcls, tbox, indices, anchors = self.build_targets(preds, targets)
        for i, pi in enumerate(preds):
            b, a, gj, gi = indices[i]
            tobj = torch.zeros(pi.shape[:4], dtype=pi.dtype, device=device)
            if b.shape[0]:
                ps = pi[b, a, gj, gi]
                pxy = ps[:, :2].sigmoid() * 2 - 0.5
                pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * anchors[i]
                iou = bbox_ciou(torch.cat((pxy, pwh), 1), tbox[i])
                lbox += (1.0 - iou).mean()
                tobj[b, a, gj, gi] = iou.detach().clamp(0).type(tobj.dtype)
                if self.nc > 1:
                    t = torch.full_like(ps[:, 5:], self.cn)
                    t[range(b.shape[0]), tcls[i]] = self.cp
                    lcls += self.bce_cls(ps[:, 5:], t)
            lobj += self.bce_obj(pi[..., 4], tobj) * self.balance[i]
        lbox *= self.box_gain
        lobj *= self.obj_gain
        lcls *= self.cls_gain
        bs = preds[0].shape[0]
        return (lbox + lobj + lcls) * bs, torch.cat((lbox, lobj, lcls)).detach()

    def build_targets(self, preds: list[torch.Tensor], targets: torch.Tensor):
        """Match targets to anchors whose width/height ratio is within anchor_t, in the target's cell
        and the two neighbouring cells closest to its centre."""
        na, nt = self.na, targets.shape[0]
        device = targets.device
        tcls, tbox, indices, anch = [], [], [], []
        gain = torch.ones(7, device=device)
        ai = torch.arange(na, device=device).float().view(na, 1).repeat(1, nt)
        targets = torch.cat((targets.repeat(na, 1, 1), ai[..., None]), 2)  # (na, nt, 7)
        g = 0.5
        offsets = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=device).float() * g
        for i in range(self.nl):
            anchors, shape = self.anchors[i], preds[i].shape
            gain[2:6] = torch.tensor(shape)[[3, 2, 3, 2]]
            t = targets * gain
            if nt:
                r = t[..., 4:6] / anchors[:, None]
                j = torch.max(r, 1 / r).max(2)[0] < self.anchor_t
                t = t[j]
                gxy = t[:, 2:4]
                gxi = gain[[2, 3]] - gxy
                j, k = ((gxy % 1 < g) & (gxy > 1)).T
                lo, m = ((gxi % 1 < g) & (gxi > 1)).T
                j = torch.stack((torch.ones_like(j), j, k, lo, m))
                t = t.repeat((5, 1, 1))[j]
                offs = (torch.zeros_like(gxy)[None] + offsets[:, None])[j]
            else:
                t = targets[0]
                offs = 0
            bc, gxy, gwh, a = t.chunk(4, 1)
            a, (b, c) = a.long().view(-1), bc.long().T
            gij = (gxy - offs).long()
            gi = gij[:, 0].clamp_(0, shape[3] - 1)
            gj = gij[:, 1].clamp_(0, shape[2] - 1)
            indices.append((b, a, gj, gi))
            tbox.append(torch.cat((gxy - torch.stack((gi, gj), 1), gwh), 1))
            anch.append(anchors[a])
            tcls.append(c)
        return tcls, tbox, indices, anch
