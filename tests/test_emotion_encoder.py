import torch

from emoeditor.models.emotion_encoder import EmotionEncoder


def test_paper_shapes_and_official_keys():
    enc = EmotionEncoder()
    shapes = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    assert shapes == {
        "fc.0.weight": (256, 8), "fc.0.bias": (256,),
        "fc.2.weight": (512, 256), "fc.2.bias": (512,),
        "fc.4.weight": (768, 512), "fc.4.bias": (768,),
        "fc.6.weight": (77 * 768, 768), "fc.6.bias": (77 * 768,),
    }
    out = enc(torch.rand(3, 8))
    assert out.shape == (3, 77, 768)


def test_matches_hand_written_mlp():
    torch.manual_seed(0)
    enc = EmotionEncoder(hidden_dims=(4, 5, 6), seq_len=3, embed_dim=2)
    x = torch.randn(2, 8)
    h = x
    for i in (0, 2, 4):
        h = torch.relu(h @ enc.fc[i].weight.T + enc.fc[i].bias)
    expected = (h @ enc.fc[6].weight.T + enc.fc[6].bias).view(2, 3, 2)
    assert torch.allclose(enc(x), expected, atol=1e-6)


def test_save_load_roundtrip(tmp_path):
    enc = EmotionEncoder(hidden_dims=(4, 5, 6), seq_len=3, embed_dim=2)
    enc.save_pretrained(tmp_path / "emotion_encoder")
    assert (tmp_path / "emotion_encoder" / "diffusion_pytorch_model.safetensors").exists()
    back = EmotionEncoder.from_pretrained(tmp_path / "emotion_encoder")
    x = torch.randn(5, 8)
    assert torch.equal(enc(x), back(x))


def test_null_embedding_only_when_learned():
    assert EmotionEncoder(hidden_dims=(4,), seq_len=3, embed_dim=2).null(2).abs().sum() == 0
    enc = EmotionEncoder(hidden_dims=(4,), seq_len=3, embed_dim=2, learned_null=True)
    assert "null_embedding" in enc.state_dict()
    assert enc.null(5).shape == (5, 3, 2)
