"""RecBole glue: backbone settings and registry (`cf`), the CF trainer wrapper (`cf.RecBoleCF`), the
sequential wrapper (`sequential`), compatibility patches (`recbole_compat`), SGCL (`sgcl`) and the pointwise
CF models CoLLM and the CTR baselines train (`pointwise`)."""
