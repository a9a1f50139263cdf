"""Every number the paper or the official code fixes, in one place.

Section references are to the paper (../shared/seeds) and its supplement; "official" means
the public ZhangLab-DeepNeuroCogLab/EmoEditor code, which settles facts the paper leaves open.
"""

# Mikels' 8 categories in the official index order; checkpoints depend on this order.
EMOTIONS = ("amusement", "anger", "awe", "contentment", "disgust", "excitement", "fear", "sadness")
NUM_EMOTIONS = len(EMOTIONS)
POSITIVE = ("amusement", "awe", "contentment", "excitement")
NEGATIVE = ("anger", "disgust", "fear", "sadness")

# Valence and arousal of the eight category words (1 = unhappy / calm, 9 = happy / aroused): the
# "V.Mean.Sum" and "A.Mean.Sum" columns of Warriner, Kuperman & Brysbaert (2013), "Norms of valence,
# arousal, and dominance for 13,915 English lemmas", Behavior Research Methods 45(4), 1191-1207,
# doi:10.3758/s13428-012-0314-x (the noun forms: "amusement", not "amused"). Not from the paper:
# they place Mikels' categories in the valence-arousal plane for --target_va (emoeditor/valence_arousal.py).
VA_NORMS = {
    "amusement": (7.00, 4.82), "anger": (2.50, 5.93), "awe": (6.85, 3.83), "contentment": (6.62, 4.60),
    "disgust": (3.32, 5.00), "excitement": (7.62, 6.21), "fear": (2.93, 6.14), "sadness": (2.40, 2.81),
}
VA_RANGE = (1.0, 9.0)  # the rating scale of both axes

# Emotion encoder (Sec. 3.1): MLP 8 -> 256 -> 512 -> 768 -> 77*768, output (77, 768).
EMOTION_ENCODER_HIDDEN = (256, 512, 768)
TEXT_SEQ_LEN = 77
TEXT_EMBED_DIM = 768
EMOTION_INPUTS = ("direction", "onehot")  # direction = target - P(source): official default

# Training (Sec. 3.2, Supp. S2.1).
LAMBDA_EMB = 0.5
LEARNING_RATE = 1e-5
BATCH_SIZE = 32
IMAGE_SIZE = 224
NUM_TRAIN_TIMESTEPS = 1000
# The official script feeds [0, 1] images to the VAE during training but [-1, 1] at inference.
VAE_INPUT_RANGES = ("minus_one_one", "zero_one")
# Training-loop defaults that are ours or the official script's (emoeditor/training/trainer.py).
MAX_EPOCH = 1000  # official train.py
IMAGE_EVERY = 10000  # official: an image strip and a checkpoint every 10000 iterations
ADAM_EPS = 1e-8  # torch's default; fp32 master weights need no larger eps
OFFICIAL_ADAM_EPS = 1e-3  # official: a workaround for its pure-fp16 Adam
CHECKPOINT_EVERY = 1000
KEEP_LAST = 3
LOG_EVERY = 10
MAX_NONFINITE = 10  # consecutive non-finite losses before a run stops
DDP_TIMEOUT_S = 1800  # seconds a process waits at a barrier (as transformers' Trainer)

# VAE latent scale of SD 1.x (official ip2p.py CONST_SCALE).
LATENT_SCALE = 0.18215

# DDIM with the SD v1 scheduler config (official: CompVis/stable-diffusion-v1-4 scheduler).
SD_V1_DDIM_CONFIG = dict(
    num_train_timesteps=NUM_TRAIN_TIMESTEPS,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    steps_offset=1,
    clip_sample=False,
    set_alpha_to_one=False,
)

# One edit (official ip2p.py): noise start T ~ U[700, 980], 30 DDIM steps, no CFG.
NOISE_START_RANGE = (700, 980)
NUM_INFERENCE_STEPS = 30

# Iterative emotion inference (Sec. 3.3): critic thresholds and loop bound.
NUM_LOOP = 30
PAPER_CRITIC = dict(ssim_low=0.3, ssim_high=0.8, confidence=0.8)
# Official test.py: keep when 0.5 < SSIM < 0.8 or the top class is the target; stop once the
# best target confidence reaches 0.6.
OFFICIAL_CRITIC = dict(ssim_low=0.5, ssim_high=0.8, confidence=0.6)
SSIM_WIN_SIZE = 51  # official utils.cal_ssim

# Metrics (Sec. 4) and the official metric_ESMI.py.
CAM_THRESHOLD = 0.5
CANNY_THRESHOLDS = (200, 500)
ESMI_ALPHA = 0.5
KL_EPS = 1e-10
# Paper silent on how ENRD averages; "image" = official cal_L1 on masked images (mean over all pixels).
ENRD_REDUCTIONS = ("image", "region")
# Grad-CAM class for the metrics: official metric_ESMI.py explains P's top class ("predicted").
CAM_TARGETS = ("predicted", "target")

# Predictor training (scripts/train_predictor.py). The paper gives no recipe beyond "ResNet18 on
# EmoSet, 73% top-1"; the official predictor takes plain [0, 1] input (no normalisation).
PREDICTOR_NORMALIZATIONS = ("none", "imagenet")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's ResNet18_Weights.IMAGENET1K_V1 file name, looked up in the torch hub cache (never downloaded).
RESNET18_IMAGENET_FILE = "resnet18-f37072fd.pth"
EMOSET_SPLITS = ("train", "val", "test")

# Hub id for users with network; never reached by tests.
IP2P_HUB_ID = "timbrooks/instruct-pix2pix"

# Official release file names (official README / test.py).
OFFICIAL_UNET_FILE = "model/model_ip2p.pt"
OFFICIAL_EMOENC_FILE = "model/model_emoenc.pt"
OFFICIAL_PREDICTOR_FILE = "emo_predictor/emo_predictor.pt"
OFFICIAL_DOWNLOADS = {
    "models": "https://drive.google.com/drive/folders/1qwTDU51XMXCa6Pjw9wNyZEUgr6ZxqjMl",
    "emo_predictor": "https://drive.google.com/file/d/1LWcj-ENbgqefXjuz2aVB8ynzUpnQYnim/view",
    "epgs": "https://drive.google.com/drive/folders/10jwTjzVpTLTOe8HnzgLBgtyFvYPMlybb",
    "epas_images": "https://instruct-pix2pix.eecs.berkeley.edu/clip-filtered-dataset/",
    "annotations": "https://drive.google.com/file/d/1aEHnfqVPwtey6zv3cRnmQvbtWhF5c5Z-/view",
}

# EmoPair (official data.py / README): annotation entries and their layout under EmoPair/.
EMOPAIR_JSON = "json/data_EmoPair.json"
EMOPAIR_ROOT = "EmoPair"
EMOPAIR_FIELDS = ("img_src_path", "img_tgt_path", "class_source", "class_target", "source_softmax", "prompt")
EMOPAIR_SUBSETS = ("EPAS", "EPGS", "all")  # official filter: "EPGS" in img_src_path
SOFTMAX_SUM_TOL = 1e-3
# How hard validation looks at image files: stat only, open the header, or decode every pixel.
EMOPAIR_IMAGE_CHECKS = ("none", "exists", "header", "decode")
EMOPAIR_REPORT_LINES = 50  # bad entries listed in full before "... and N more"

# Test protocol (Sec. 4): 504 EmoSet images not in EmoPair, 63 per source class, each edited to
# the other 7 emotions (3,528 jobs), reported on cross-valence pairs (and within-valence separately).
TEST_SPLIT_JSON = "json/test_split.json"
# what `make demo` (scripts/demo.py --out runs/demo) writes; the tiny presets read it
DEMO_DIR = "runs/demo"
TEST_PER_CLASS = 63
TEST_SPLIT_SEED = 0
RELATIONS = ("cross", "within")  # cross-valence (Table 1) and within-valence transfer

# Table 1 of the paper (cross-valence): EMR %, ESR %, ENRD, ESS per method.
PAPER_METRICS = ("EMR", "ESR", "ENRD", "ESS")
PAPER_TABLE1 = {
    "CT": (6.89, 79.32, 33.29, 7.36),
    "NST": (34.42, 92.01, 34.45, 18.57),
    "Csty": (11.51, 85.52, 41.47, 36.64),
    "Ip2p": (2.53, 67.76, 9.39, 12.71),
    "LMS": (11.51, 77.38, 26.13, 19.74),
    "w/o P": (5.06, 69.15, 19.45, 14.93),
    "w/o L_emb": (43.35, 91.62, 22.53, 16.00),
    "Ours": (50.20, 92.86, 23.98, 16.27),
}
BOOTSTRAP_RESAMPLES = 1000
CI_LEVEL = 0.95

# Downloading the official release (scripts/download_weights.py). Google Drive publishes no
# checksums, so a download is checked by size floor + the zip CRCs of the torch file, and its
# sha256 is then recorded in SHA256SUMS next to it. Sizes: fp16 UNet+VAE ~1.9 GB, fp32 encoder
# ~184 MB, ResNet18 ~45 MB; the floors only catch error pages and gross truncation.
OFFICIAL_MIN_BYTES = {
    OFFICIAL_UNET_FILE: 1_000_000_000,
    OFFICIAL_EMOENC_FILE: 50_000_000,
    OFFICIAL_PREDICTOR_FILE: 20_000_000,
}
CHECKSUM_FILE = "SHA256SUMS"
IP2P_LOCAL_DIR = "model/instruct-pix2pix"  # where download_weights.py puts the base Ip2p
# The base files needed: configs always; weights only to train (official inference needs configs only).
IP2P_CONFIG_PATTERNS = ("model_index.json", "*/config.json", "scheduler/*", "tokenizer/*")
IP2P_WEIGHT_PATTERNS = ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                        "text_encoder/model.safetensors")

# Full-size SD 1.5 InstructPix2Pix architecture (the public configs of timbrooks/instruct-pix2pix),
# built with random weights by scripts/bench_train.py to measure training speed without a download.
SD15_IP2P_UNET_CONFIG = dict(
    sample_size=64, in_channels=8, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
)
SD15_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32, sample_size=512,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)
CLIP_VIT_L14_TEXT_CONFIG = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
)

# Test-split source pool: the EmoSet split lists sources may come from. The paper says only "504 EmoSet
# images not in EmoPair"; P is trained on EmoSet's train list, so a train image as a source makes P
# over-confident on it (ESR and the direction input shift). Default: the test list, never seen by P;
# ("train", "val", "test") is the literal reading (docs/reproducing_table1.md, "Source pool").
TEST_SOURCE_SPLITS = ("test",)
P_TRAIN_SPLIT = "train"  # the EmoSet list the emotion predictor P is trained on

# Official train.py: the preview edit (which draws T ~ U{700..980} and leaves it in the shared
# scheduler's config.num_train_timesteps, see training's --train_timesteps official) runs at
# iteration 0 and every 10,000 iterations.
OFFICIAL_PREVIEW_EVERY = 10_000
