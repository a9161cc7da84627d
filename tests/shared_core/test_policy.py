from shared_core.policy import content_text, routing_text


class Block:
    def __init__(self, text, block_type="text"):
        self.text = text
        self.block_type = block_type


def test_routes_on_last_user_message_through_tool_loop():
    convo = [
        ("system", "You are helpful."),
        ("user", "What is 2+2?"),
        ("assistant", ""),
        ("tool", "4"),
        ("assistant", "It is 4."),
    ]
    assert routing_text(convo) == ("What is 2+2?", "score")
    assert routing_text(convo + [("user", "And 3+3?")]) == ("And 3+3?", "score")


def test_content_blocks_text_joined_images_ignored():
    content = [
        {"type": "text", "text": "Describe"},
        {"type": "image_url", "image_url": {"url": "data:..."}},
        "this picture",
        Block("please"),
        Block(None, "image"),
    ]
    assert content_text(content) == "Describe\nthis picture\nplease"


def test_no_text_cases():
    assert routing_text([("system", "x"), ("assistant", "y")]) == (None, "no_user_message")
    assert routing_text([]) == (None, "no_user_message")
    assert routing_text([("user", [{"type": "image_url", "image_url": {"url": "u"}}])]) == (None, "no_text")
    assert routing_text([("user", "   ")]) == (None, "no_text")
    assert routing_text([("human", "hello")]) == ("hello", "score")
