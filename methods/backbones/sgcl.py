"""SGCL (supervised graph contrastive loss) as a RecBole model class on LightGCN's encoder.

Not in RecBole 1.2.1. Loss from ../shared/PROTOCOLS.md (LLMInit code): L2-normalised user and item
vectors, temperature tau,
    loss = -log( exp(u.i/tau) / (sum_u' exp(u.u'/tau) + sum_i' exp(i.i'/tau)) )
over the batch's (user, positive item) pairs, no BPR term and no negative sampling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.model.general_recommender.lightgcn import LightGCN


class SGCL(LightGCN):
    """LightGCN propagation, trained with the supervised graph contrastive loss; scores by cosine."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.tau = config["sgcl_tau"]

    def calculate_loss(self, interaction):
        if self.restore_user_e is not None or self.restore_item_e is not None:
            self.restore_user_e, self.restore_item_e = None, None
        user_all, item_all = self.forward()
        u = F.normalize(user_all[interaction[self.USER_ID]], dim=-1)
        i = F.normalize(item_all[interaction[self.ITEM_ID]], dim=-1)
        positive = (u * i).sum(-1) / self.tau
        denominator = torch.logsumexp(torch.cat([u @ u.T, i @ i.T], dim=1) / self.tau, dim=1)
        return (denominator - positive).mean()

    def predict(self, interaction):
        user_all, item_all = self.forward()
        u = F.normalize(user_all[interaction[self.USER_ID]], dim=-1)
        i = F.normalize(item_all[interaction[self.ITEM_ID]], dim=-1)
        return (u * i).sum(-1)

    def full_sort_predict(self, interaction):
        if self.restore_user_e is None or self.restore_item_e is None:
            user_all, item_all = self.forward()
            self.restore_user_e = F.normalize(user_all, dim=-1)
            self.restore_item_e = F.normalize(item_all, dim=-1)
        u = self.restore_user_e[interaction[self.USER_ID]]
        return torch.matmul(u, self.restore_item_e.T).view(-1)
