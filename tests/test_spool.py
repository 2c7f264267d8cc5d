"""The uploader's spool keeps unacknowledged records in order, in memory up to its limit and in a
temporary file past it, and can replay them skipping what the server already holds."""

from capture_agent.uploader import Spool


def test_records_past_the_memory_limit_spill_to_a_file_and_replay_in_order_skipping_stored_ones():
    spool = Spool(memory_bytes=10)
    records = [(i, bytes([i]) * 4) for i in range(5)]  # two fit in memory, three spill
    for index, blob in records:
        spool.add(index, blob)
    assert len(spool) == 5 and spool.indexes() == {0, 1, 2, 3, 4}
    assert list(spool.records()) == records
    assert list(spool.records(skip={1, 3})) == [records[0], records[2], records[4]]
    spool.clear()
    assert len(spool) == 0 and list(spool.records()) == []
    spool.add(7, b"x" * 20)  # after a clear the file is reused from its start
    assert list(spool.records()) == [(7, b"x" * 20)]
    spool.close()
