from .emotion_encoder import EmotionEncoder

__all__ = ["EmotionEncoder"]
