from django import forms

from .models import PortraitSettings


class PortraitSettingsForm(forms.ModelForm):
    class Meta:
        model = PortraitSettings
        fields = ["enabled", "before_completion_redirect", "min_ratings"]
        labels = {
            "enabled": "Show participants a portrait of their taste",
            "before_completion_redirect": (
                "Also to participants sent back to Prolific (or another completion "
                "URL), before that redirect"
            ),
            "min_ratings": "Ratings needed before it can be seen",
        }
        widgets = {"min_ratings": forms.NumberInput(attrs={"min": 5, "max": 10000})}


class FeedbackForm(forms.Form):
    token = forms.CharField(max_length=40)
    answer = forms.ChoiceField(choices=[("me", "me"), ("not_me", "not_me")])
    side = forms.ChoiceField(choices=[("like", "like"), ("dislike", "dislike")])
