"""Builders for Telegram Bot API updates, shaped as https://core.telegram.org/bots/api documents
them (Update, Message, CallbackQuery, ChatMemberUpdated), and the channel they arrive on."""

import itertools
import json
import time

from apps.connectors.models import Channel
from apps.connectors.providers.telegram import webhook_secret

BOT_TOKEN = "7000001:AAE-parley_test_token"
BOT = {"id": 7000001, "is_bot": True, "first_name": "Nile Basket", "username": "nile_basket_bot"}
USER_ID = 5551234
AMIRA = {
    "id": USER_ID,
    "is_bot": False,
    "first_name": "Amira",
    "last_name": "Nasser",
    "username": "amira_n",
    "language_code": "ar",
}
_update_ids = itertools.count(800000001)


def make_telegram_channel(workspace, **settings) -> Channel:
    return Channel.objects.create(
        workspace=workspace,
        kind="telegram",
        name="Telegram bot",
        credentials={"bot_token": BOT_TOKEN},
        settings={"base_url": "http://127.0.0.1:9", **settings},
        rate_limit_per_second=30,
    )


def private_chat(user: dict = AMIRA) -> dict:
    keys = ("id", "first_name", "last_name", "username")
    return {**{key: user[key] for key in keys if key in user}, "type": "private"}


def update(**body) -> dict:
    return {"update_id": next(_update_ids), **body}


def message(message_id: int, *, user: dict = AMIRA, chat: dict | None = None, **content) -> dict:
    return {
        "message_id": message_id,
        "from": user,
        "chat": chat or private_chat(user),
        "date": int(time.time()),
        **content,
    }


def text(body: str, message_id: int = 1, **extra) -> dict:
    return update(message=message(message_id, text=body, **extra))


def photo(message_id: int = 2, caption: str = "") -> dict:
    # "Available sizes of the photo", smallest first.
    sizes = [
        {"file_id": "AgACAgQ-small", "file_unique_id": "AQAD1", "file_size": 1530, "width": 90, "height": 67},
        {"file_id": "AgACAgQ-medium", "file_unique_id": "AQAD2", "file_size": 20841, "width": 320, "height": 240},
        {"file_id": "AgACAgQ-large", "file_unique_id": "AQAD3", "file_size": 86012, "width": 1280, "height": 960},
    ]
    return update(message=message(message_id, photo=sizes, **({"caption": caption} if caption else {})))


MEDIA_OBJECTS = {
    "document": {
        "file_name": "invoice 12.pdf",
        "mime_type": "application/pdf",
        "file_id": "BQACAgQ-doc",
        "file_unique_id": "AgAD4",
        "file_size": 48211,
    },
    "voice": {"duration": 4, "mime_type": "audio/ogg", "file_id": "AwACAgQ-voice", "file_unique_id": "AgAD5"},
    "video": {
        "duration": 9,
        "width": 640,
        "height": 360,
        "file_name": "unboxing.mp4",
        "mime_type": "video/mp4",
        "file_id": "BAACAgQ-video",
        "file_unique_id": "AgAD6",
    },
    "audio": {
        "duration": 180,
        "performer": "Nile Band",
        "title": "Basket Song",
        "file_name": "song.mp3",
        "mime_type": "audio/mpeg",
        "file_id": "CQACAgQ-audio",
        "file_unique_id": "AgAD7",
    },
    "sticker": {
        "width": 512,
        "height": 512,
        "emoji": "👍",
        "set_name": "HotCherry",
        "is_animated": False,
        "is_video": False,
        "type": "regular",
        "file_id": "CAACAgQ-sticker",
        "file_unique_id": "AgAD8",
    },
    "video_note": {"duration": 6, "length": 240, "file_id": "DQACAgQ-round", "file_unique_id": "AgAD9"},
}


def media(field: str, message_id: int = 3, caption: str = "") -> dict:
    return update(
        message=message(message_id, **{field: MEDIA_OBJECTS[field]}, **({"caption": caption} if caption else {}))
    )


def contact(phone: str, *, user_id: int | None = USER_ID, first_name="Amira", message_id: int = 4) -> dict:
    card = {"phone_number": phone, "first_name": first_name}
    if user_id is not None:
        card["user_id"] = user_id
    return update(message=message(message_id, contact=card))


def location(latitude: float, longitude: float, message_id: int = 5) -> dict:
    return update(message=message(message_id, location={"latitude": latitude, "longitude": longitude}))


def edited(message_id: int, new_text: str) -> dict:
    edited_message = message(message_id, text=new_text)
    edited_message["edit_date"] = edited_message["date"] + 30
    return update(edited_message=edited_message)


def keyboard_message(message_id: int, body: str, buttons: list[tuple[str, str]]) -> dict:
    """A message the bot sent, with its inline keyboard (one button per row)."""
    rows = [[{"text": title, "callback_data": data}] for title, data in buttons]
    return message(message_id, user=BOT, chat=private_chat(), text=body, reply_markup={"inline_keyboard": rows})


def callback_query(menu: dict, data: str, query_id: str = "4382bfdwdsb323b2d9") -> dict:
    return update(
        callback_query={"id": query_id, "from": AMIRA, "message": menu, "chat_instance": "-8016526431", "data": data}
    )


def my_chat_member(old: str, new: str) -> dict:
    return update(
        my_chat_member={
            "chat": private_chat(),
            "from": AMIRA,
            "date": int(time.time()),
            "old_chat_member": {"user": BOT, "status": old},
            "new_chat_member": {"user": BOT, "status": new, **({"until_date": 0} if new == "kicked" else {})},
        }
    )


def post_update(client, channel, body, *, secret: str | None = None):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {} if secret == "" else {"X-Telegram-Bot-Api-Secret-Token": secret or webhook_secret(channel)}
    return client.post(f"/webhooks/{channel.uuid}/", raw, content_type="application/json", headers=headers)
