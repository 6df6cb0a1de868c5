"""Closed-loop driving on the world's roads (`pdn drive`): the policy, the safety driver, the video sink."""
