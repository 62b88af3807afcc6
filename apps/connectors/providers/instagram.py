"""Instagram Direct through the Messenger Platform (Instagram API with Facebook Login).

Credentials: page_access_token (of the Facebook Page linked to the Instagram professional
account), app_secret, page_id (here the Instagram professional account's id: webhooks name it
in `entry.id`, and `POST /{ig-id}/messages` sends with the Page's token).
Settings: base_url (default https://graph.facebook.com), api_version (default v21.0).

Everything is Messenger's (messenger.py) but the webhook `object` and the limits.
"""

from apps.connectors.providers.messenger import MB, MessengerConnector


class InstagramConnector(MessengerConnector):
    kind = "instagram"
    webhook_object = "instagram"
    # Send API for Instagram: "text must be UTF-8 and less than 1000 bytes" (an Arabic letter
    # takes two).
    text_limit = 1000
    text_limit_unit = "bytes"
    # Instagram Messaging, "Upload Media": image (png, jpeg, gif) 8 MB; video, audio and files
    # (pdf) 25 MB.
    size_limits = {"image": 8 * MB, "video": 25 * MB, "audio": 25 * MB, "document": 25 * MB}
