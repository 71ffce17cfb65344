"""Realistic model answers (what Qwen-VL-class models write, well and badly) with what the parser must make
of them. Used by test/test_parser.py and by `make bench` (parser_us_p50)."""
from __future__ import annotations

# (answer text, action, stop, number of waypoints, rejection reason or None)
CORPUS: list[tuple[str, str, bool, int, str | None]] = [
    # The format we ask for, as guided decoding produces it.
    ('{"env":"corridor, red door ahead on the left","act":"forward","wp":[[0.8,0,0,0.9],[0.6,0.2,20,0.7]]}',
     'forward', False, 2, None),
    ('{"env": "open office, desks on both sides", "act": "turn_left", "wp": [[0, 0, 45, 0.8], [0.5, 0, 0, 0.7]]}',
     'turn_left', False, 2, None),
    ('{"env":"at the red door","act":"arrived","wp":[]}', 'arrived', True, 0, None),
    ('{"env":"person standing right in front","act":"stop","wp":[]}', 'stop', True, 0, None),
    # Unguided habits: fences, chatter, pretty printing, long key names, dict waypoints.
    ('```json\n{\n  "env": "kitchen",\n  "act": "forward",\n  "wp": [[0.5, 0.0, 0, 0.9]]\n}\n```', 'forward', False, 1,
     None),
    ('Here is the plan:\n```\n{"env":"hallway","act":"right","wp":[[0,-0.3,0,0.6]]}\n```\nLet me know!', 'right',
     False, 1, None),
    ('Sure! {"environment": "stairs ahead", "action": "Move Forward", "waypoints": '
     '[{"dx": 0.4, "dy": 0, "dtheta": 0, "confidence": 0.8}]} I hope this helps.', 'forward', False, 1, None),
    ('{"env":"lobby","act":"turn right","wp":[[0,0,-30,0.9]]}', 'turn_right', False, 1, None),
    ('{"env":"goal visible","act":"done","wp":[]}', 'arrived', True, 0, None),
    ('<think>The door is on the left, so I should turn.</think>{"env":"door left","act":"turn_left",'
     '"wp":[[0,0,60,0.8]]}', 'turn_left', False, 1, None),
    # Cut off by max_new_tokens: the complete steps are kept.
    ('{"env":"long corridor","act":"forward","wp":[[0.8,0,0,0.9],[0.8,0,0,0.8],[0.8,0,', 'forward', False, 2, None),
    ('{"env":"long corridor with many doors on both sides and a fire extinguisher', 'stop', True, 0,
     'missing_waypoints'),
    # Plain text, English and Chinese.
    ('Move forward 1 meter, then turn left 30 degrees.', 'forward', False, 2, None),
    ('I will turn right by 90 degrees and then go forward 50 cm.', 'turn_right', False, 2, None),
    ('The goal has been reached. Stop.', 'arrived', True, 0, None),
    ('向前走两米，然后左转九十度。', 'forward', False, 2, None),
    ('前面是红色的门，已到达目标。', 'arrived', True, 0, None),
    ('右转30度', 'turn_right', False, 1, None),
    # Answers that must end in a stop plan.
    ('', 'stop', True, 0, 'empty'),
    ('I can see a corridor with a red door.', 'stop', True, 0, 'no_answer'),
    ('{"env":"x","act":"forward","wp":[[NaN,0,0,0.9]]}', 'stop', True, 0, 'non_finite'),
    ('{"env":"x","act":"forward","wp":[[1e999,0,0,0.9]]}', 'stop', True, 0, 'non_finite'),
    ('{"env":"x","act":"forward","wp":"straight ahead"}', 'stop', True, 0, 'bad_waypoints'),
    ('{"env":"x","act":"forward","wp":[[0.5,"left",0,0.9]]}', 'stop', True, 0, 'bad_waypoint'),
    ('{"env":"x","act":"forward","wp":[[0.5,0]]}', 'stop', True, 0, 'bad_waypoint'),
    ('{"env":"x","act":"forward","wp":[[true,0,0,0.9]]}', 'stop', True, 0, 'bad_waypoint'),
    ('{"env":"x","act":"forward","wp":[]}', 'stop', True, 0, 'no_waypoints'),
    ('{"env":"x","act":"forward"}', 'stop', True, 0, 'missing_waypoints'),
    ('<think>Let me look at the image carefully. The corridor', 'stop', True, 0, 'empty'),
    # Adversarial (issue 23): what the stream published though the whole answer said otherwise.
    # A plan inside the thinking, closed or still open, is not the answer's.
    ('<think>Maybe {"act":"forward","wp":[[0.8,0,0,0.9]],"env":"x"} but the door is left.</think>'
     '{"act":"turn_left","wp":[[0,0,60,0.8]],"env":"door left"}', 'turn_left', False, 1, None),
    ('<think>Maybe {"act":"forward","wp":[[0.8,0,0,0.9]],"env":"x"} but', 'stop', True, 0, 'empty'),
    ('{"act":"forward","env":"a <think>","wp":[[0.8,0,0,0.9]]}', 'stop', True, 0, 'missing_waypoints'),
    # Qwen3 thinking models: the chat template writes <think>, the answer holds only </think>.
    ('The corridor goes on: {"act":"forward","wp":[[0.8,0,0,0.9]]} but a person crosses.\n</think>\n\n'
     '{"act":"stop","wp":[],"env":"person crossing"}', 'stop', True, 0, None),
    ('Looking: {"act":"forward","wp":[[0.8,0,0,0.9]]} then\n</think>\n\n{"act":"turn_right","wp":'
     '[[0,0,-30,0.9]],"env":"door right"}', 'turn_right', False, 1, None),
    # A field named twice, or under two spellings: two plans in one answer, so none.
    ('{"act":"forward","wp":[[0.8,0,0,0.9]],"act":"stop","env":"x"}', 'stop', True, 0, 'duplicate_key'),
    ('{"act":"forward","act":"stop","wp":[[0.8,0,0,0.9]],"env":"x"}', 'stop', True, 0, 'duplicate_key'),
    ('{"act":"forward","wp":[[0.8,0,0,0.9]],"wp":[[0.2,0,-90,0.9]],"env":"x"}', 'stop', True, 0,
     'duplicate_key'),
    ('{"action":"forward","act":"turn_left","wp":[[0,0,45,0.9]],"env":"x"}', 'stop', True, 0, 'duplicate_key'),
    ('{"act":"forward","waypoints":[[0.8,0,0,0.9]],"wp":[[0,0,90,0.9]]}', 'stop', True, 0, 'duplicate_key'),
    ('{"env":"x","scene":"y","act":"forward","wp":[[0.8,0,0,0.9]]}', 'stop', True, 0, 'duplicate_key'),
    ('{"act":"forward","wp":[{"dx":0.8,"x":-0.8,"dy":0,"dtheta":0,"confidence":0.9}]}', 'stop', True, 0,
     'duplicate_key'),
    ('{"act":"forward","wp":[{"dx":0.8,"dx":-0.8,"dy":0,"dtheta":0,"confidence":0.9}]}', 'stop', True, 0,
     'duplicate_key'),
    # An answer that opens with its object is that object, whatever follows.
    ('{"act":"forward","wp":[[0.8,0,0,0.9]],"env":"x"} Or rather:\n```json\n{"act":"stop","wp":[]}\n```',
     'forward', False, 1, None),
    # Past the length guard, nothing: the plan completes after 16,384 characters.
    ('{"env":"' + 'corridor ' * 1900 + '","act":"forward","wp":[[0.8,0,0,0.9]]}', 'stop', True, 0, 'too_long'),
    ('{"act":"forward","wp":[' + '[0.1,0,0,0.9],' * 1200 + '[0.1,0,0,0.9]],"env":"x"}', 'stop', True, 0,
     'too_long'),
]
