from emoeditor.models.emotion_encoder import EmotionEncoder

__all__ = ["EmotionEncoder"]
