"""Queries over the pool."""

from django.db.models import Q, QuerySet

from .models import PoolUser


def pool_candidates_for(user: PoolUser) -> QuerySet[PoolUser]:
    """Waiting users compatible with `user`, longest-waiting first, as one indexed query.

    The SQL mirrors matching.rules.compatible (the rule as plain Python): a null attribute meets no non-null target field.
    """
    qs = PoolUser.objects.filter(status=PoolUser.Status.WAITING, language=user.language).exclude(pk=user.pk)
    # Their target accepts this user.
    if user.gender is None:
        qs = qs.filter(target_gender__isnull=True)
    else:
        qs = qs.filter(Q(target_gender__isnull=True) | Q(target_gender=user.gender))
    if user.age is None:
        qs = qs.filter(target_age_min__isnull=True, target_age_max__isnull=True)
    else:
        qs = qs.filter(
            Q(target_age_min__isnull=True) | Q(target_age_min__lte=user.age),
            Q(target_age_max__isnull=True) | Q(target_age_max__gte=user.age),
        )
    # This user's target accepts them (a null attribute never matches a comparison).
    if user.target_gender is not None:
        qs = qs.filter(gender=user.target_gender)
    if user.target_age_min is not None:
        qs = qs.filter(age__gte=user.target_age_min)
    if user.target_age_max is not None:
        qs = qs.filter(age__lte=user.target_age_max)
    return qs.order_by("created_at", "pk")


def user_held_on(*, channel_name: str) -> bool:
    """Whether a connection holds a user: waiting, being paired or in a dialog."""
    return PoolUser.objects.filter(channel_name=channel_name, status__in=PoolUser.HELD).exists()
