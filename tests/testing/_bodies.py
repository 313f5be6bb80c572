"""The request bodies of the vendor's API reference, verbatim, for the fake to accept.

The curl bodies are the text between the quotes of ``-d '...'``; the "Request Body" example
has only its ``// Sale only`` comments removed (JSON has no comments). The email addresses
read ``[email protected]`` because that is how the reference's web page was saved.
"""

from __future__ import annotations

from typing import Any

CURL_LEAD = """{
"trackingId": "rLnWe1uz9t282v7g",
"customer": {
"externalId": "user_123",
"email": "[email protected]"
}
}"""

CURL_SALE_WITH_TRACKING_ID = """{
"trackingId": "rLnWe1uz9t282v7g",
"customer": {
"externalId": "user_123",
"email": "[email protected]"
},
"amount": 99.99,
"currency": "eur",
"metadata": {
"orderId": "order_456"
}
}"""

CURL_SALE_WITHOUT_TRACKING_ID = """{
"customer": {
"externalId": "user_123"
},
"amount": 99.99,
"currency": "eur"
}"""

REQUEST_BODY_EXAMPLE = """{
"trackingId": "rLnWe1uz9t282v7g",
"customer": {
"externalId": "user_123",
"email": "[email protected]",
"firstname": "John",
"lastname": "Doe",
"phoneNumber": "+33612345678",
"avatarUrl": "https://example.com/avatar.jpg"
},
"amount": 99.99,
"currency": "eur",
"metadata": {}
}"""


def python_requests_lead() -> dict[str, Any]:
    """The ``json=`` of the reference's ``requests`` example, for a user with no names."""
    tracking_id = "rLnWe1uz9t282v7g"
    user: dict[str, Any] = {"id": "user_123", "email": "[email protected]"}
    return {
        "trackingId": tracking_id,
        "customer": {
            "externalId": user["id"],
            "email": user["email"],
            "firstname": user.get("first_name"),
            "lastname": user.get("last_name"),
        },
    }


def node_sdk_lead() -> dict[str, Any]:
    """What the reference's Node.js ``track.lead`` call puts on the wire."""
    return {
        "trackingId": "rLnWe1uz9t282v7g",
        "customer": {
            "externalId": "user_123",
            "email": "[email protected]",
            "firstname": "John",
            "lastname": "Doe",
        },
        "metadata": {"source": "signup-api", "plan": "pro"},
    }


def node_sdk_sale() -> dict[str, Any]:
    """What the reference's Node.js ``track.sale`` call puts on the wire."""
    return {
        "trackingId": "rLnWe1uz9t282v7g",
        "customer": {"externalId": "user_123", "email": "[email protected]"},
        "amount": 149.99,
        "currency": "eur",
        "metadata": {"orderId": "order_456", "productIds": ["prod_1", "prod_2"]},
    }
