# One long step (NAP seconds), to be cancelled.
sleep "$NAP"
