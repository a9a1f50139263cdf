"""EmoPair curation (paper Sec. 3.1, Supp. S1): rebuild EPAS and EPGS from their sources.

EPAS labels InstructPix2Pix pairs with the emotion predictor P; EPGS edits EmoSet images with
an instruction bank and keeps the candidates that pass P's confidence, SSIM and LPIPS filters.
Work is split into hash-assigned shards written atomically (`shards`), so runs resume and
spread over processes; `merge` deduplicates, validates and writes the official annotation JSON.
"""
