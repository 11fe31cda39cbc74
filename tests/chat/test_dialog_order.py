"""chat.order.DialogOrder: a dialog's events leave in seq order, answers behind them."""

from chat.order import DialogOrder


def test_events_in_order_pass_at_once():
    order = DialogOrder()
    assert order.push(1, "e1") == ["e1"]
    assert order.push(2, "e2") == ["e2"]
    assert not order.waiting


def test_an_early_event_waits_for_the_one_before_it():
    order = DialogOrder()
    assert order.push(2, "e2") == []
    assert order.waiting
    assert order.push(1, "e1") == ["e1", "e2"]
    assert not order.waiting


def test_a_repeat_is_dropped():
    order = DialogOrder()
    order.push(1, "e1")
    assert order.push(1, "again") == []


def test_answers_wait_behind_held_events_and_keep_their_order():
    order = DialogOrder()
    assert order.push(2, "e2") == []
    assert order.push_unordered("receipt") == []
    assert order.push_unordered("refusal") == []
    assert order.push(1, "e1") == ["e1", "e2", "receipt", "refusal"]


def test_an_answer_with_nothing_waiting_passes_at_once():
    assert DialogOrder().push_unordered("receipt") == ["receipt"]


def test_an_item_after_a_seq_waits_for_that_event():
    order = DialogOrder()
    order.push(1, "e1")
    assert order.push_after(3, "21 dialog_ended") == []
    assert order.push_unordered("receipt") == []
    assert order.push(3, "30") == []
    assert order.push(2, "e2") == ["e2", "30", "21 dialog_ended", "receipt"]


def test_an_item_after_a_seq_already_sent_passes():
    order = DialogOrder()
    order.push(1, "30")
    assert order.push_after(1, "31 dialog_ended") == ["31 dialog_ended"]


def test_skip_gap_sends_everything_that_waits_in_order():
    order = DialogOrder()
    order.push(3, "e3")
    order.push_after(3, "after3")
    order.push(5, "e5")
    order.push_unordered("receipt")
    assert order.skip_gap() == ["e3", "after3", "e5", "receipt"]
    assert not order.waiting
    assert order.push(6, "e6") == ["e6"]
    assert order.push(4, "late e4") == []


def test_a_new_dialog_starts_at_seq_1_after_the_last_one_is_let_go():
    order = DialogOrder()
    order.push(1, "e1")
    order.push(3, "e3")
    assert order.begin() == ["e3"]
    assert order.push(1, "new e1") == ["new e1"]


def test_missing_names_the_seqs_something_waits_for():
    order = DialogOrder()
    assert order.missing() is None
    order.push(1, "e1")
    order.push(4, "e4")
    assert order.missing() == (2, 4)
    order.push_after(6, "after the 30")
    assert order.missing() == (2, 6)
