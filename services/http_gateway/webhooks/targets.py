"""Where a subscription may post: http or https (the URL's pattern says so) to a public
address, unless `webhook_private_urls` allows others (the rule of media URLs,
services/common/urls.py). Checked when a subscription is made and again before
deliveries, since a name may come to resolve elsewhere."""

from __future__ import annotations

from services.common.urls import host_addresses, public_address, shown


async def refusal(url: str, allow_private: bool) -> str | None:
    """Why the gateway will not post to `url`, or None when it will."""
    if allow_private:
        return None
    try:
        addresses = await host_addresses(url)
    except OSError as exc:
        return f"{shown(url)}: its host does not resolve ({exc})"
    refused = [address for address in addresses if not public_address(address)]
    if refused:
        return (
            f"{shown(url)} points at a non-public address ({refused[0]}); webhooks go to public "
            "addresses only (WA_WEBHOOK_PRIVATE_URLS=true allows others)"
        )
    return None
