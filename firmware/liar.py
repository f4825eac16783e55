"""A board that misbehaves on purpose (config.json "equivocate": true), for
`make run` and the tests (docs/TRUST.md): its first reading it signs twice,
the second time with another value under the same seq, and publishes the
twin at once. The gateway sees two different transactions with one seq,
files them as a proof of equivocation, and the chain bans the board's key.
Loaded only on such a board (firmware/startup.py): other boards pay no heap
for it."""
from shared import tx


def equivocate(node):
    submit = node.submit
    done = []

    def twice(type_, body):
        seq = submit(type_, body)
        if seq is not None and type_ == tx.TYPE_READING and not done:
            done.append(seq)
            twin = dict(body)
            twin[1] = body[1] + 1
            msg = node.wallet.sign_tx(type_, node.domain, seq, node.fee, twin)
            try:
                node.client.publish(node.tx_topic, msg, qos=1)
                node.log("equivocate seq=%d" % seq)
            except OSError:
                pass
        return seq

    node.submit = twice
