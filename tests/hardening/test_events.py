import uuid

from randomchat.events import chat_group


def test_chat_group_is_the_same_for_every_spelling_of_the_id():
    chat = uuid.uuid4()
    assert chat_group(chat) == chat_group(str(chat)) == chat_group(chat.hex) == f"chat.{chat.hex}"
