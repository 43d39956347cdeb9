"""``{% random_weights_banner v %}``: the warning every page that shows a model's
output carries when that model's backbone ran on random weights.

One tag, one template (``rewardmodel/_random_weights_banner.html``) and one test
(``selectors.versions_on_random_weights``), so the dashboard, the model and run
pages and the steering pages cannot disagree about it. Arguments are versions,
version ids, None, or lists of them (a page passes whatever versions produced
the figures it shows).
"""

from django import template
from django.db.models import QuerySet

from .. import selectors

register = template.Library()


@register.inclusion_tag("rewardmodel/_random_weights_banner.html")
def random_weights_banner(*versions) -> dict:
    flat = []
    for v in versions:
        if isinstance(v, list | tuple | set | QuerySet):
            flat.extend(v)
        else:
            flat.append(v)
    return {"versions": selectors.versions_on_random_weights(versions=flat)}
