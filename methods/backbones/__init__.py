"""RecBole glue: the CF trainer wrapper (`cf.RecBoleCF`), the sequential wrapper (`sequential`), SGCL (`sgcl`)
and the pointwise CF models CoLLM and the CTR baselines train (`pointwise`). The backbones' settings and
names are the engine's (`bench.backbones`), as are the RecBole patches (`bench.recbole_compat`)."""
