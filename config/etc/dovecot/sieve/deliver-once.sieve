# Runs before every delivery (dovecot.conf: sieve_before).
#
# If the relay dies after Dovecot has stored a message but before Postfix has
# recorded that delivery, Postfix delivers the message again after the restart.
# The duplicate test (RFC 7352) looks the Message-ID up in the recipient's
# duplicate database (~/.dovecot.lda-dupes) and records it after a delivery;
# a message seen within the last day is dropped. Without a Message-ID the test
# is false and the message is delivered.
require ["duplicate"];

if duplicate :seconds 86400 {
  discard;
  stop;
}
