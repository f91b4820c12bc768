"""What a user does: create accounts from the QR flow and chat, end to end encrypted."""

from deltachat_rpc_client.const import EventType

from relaytest import wait_for


def receive(account):
    return account.wait_for_incoming_msg().get_snapshot()


def chat_has(chat, text: str) -> bool:
    return any(m.get_snapshot().text == text and m.get_snapshot().show_padlock
               for m in chat.get_messages())


def receive_text(account):
    msg = receive(account)
    return msg.text, msg.show_padlock


def test_two_accounts_chat_both_ways_encrypted(make_account):
    alice, bob = make_account(), make_account()
    alice.create_chat(bob).send_text("hello bob")
    assert receive_text(bob) == ("hello bob", True)

    bob.create_chat(alice).send_text("hello alice")
    assert receive_text(alice) == ("hello alice", True)


def test_group_of_three(make_account):
    a, b, c = make_account(), make_account(), make_account()
    group = a.create_group("three")
    group.add_contact(a.create_contact(b))
    group.add_contact(a.create_contact(c))
    group.send_text("hi group")
    b_msg, c_msg = receive(b), receive(c)
    assert (b_msg.text, b_msg.show_padlock) == ("hi group", True)
    assert (c_msg.text, c_msg.show_padlock) == ("hi group", True)

    b_group, c_group = b.get_chat_by_id(b_msg.chat_id), c.get_chat_by_id(c_msg.chat_id)
    b_group.accept()
    c_group.accept()
    b_group.send_text("reply from b")
    for chat in (group, c_group):
        wait_for(lambda: chat_has(chat, "reply from b"), 30, 0.2, "group reply, encrypted")


def test_message_arrives_while_recipient_idles(make_account):
    alice, bob = make_account(), make_account()
    chat = alice.create_chat(bob)
    # bring_online waited for all work to be done; the next IDLE event shows that
    # bob's IMAP connection sits in IDLE on INBOX before the message is sent.
    bob.clear_all_events()
    bob.stop_io()
    bob.start_io()
    bob.wait_for_event(EventType.IMAP_INBOX_IDLE)
    chat.send_text("while you idle")
    assert receive_text(bob) == ("while you idle", True)
