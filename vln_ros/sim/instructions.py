"""What an episode's instruction may say and how it is worded, in English and Chinese: the instruction families,
their templates, and the words for colours, landmarks, counted doors, sides and turns. No ROS.

The words live here alone; what the words refer to (a door's colour, a landmark's size, a corridor's turn) is put
in the scene by vln_ros/sim/layout.py and vln_ros/sim/placement.py, and vln_ros/sim/scenes.py fills the blanks.
"""
from __future__ import annotations

import numpy as np

FAMILIES = ('door_ahead', 'door_at_end', 'door_ordinal', 'turn_at_junction', 'multi_turn', 'past_landmark',
            'landmark_goal', 'room')
ZH_SHARE = 0.25              # the share of scenes whose instruction is in Chinese

COLOURS_ZH = {'red': '红色', 'blue': '蓝色', 'green': '绿色', 'yellow': '黄色', 'grey': '灰色', 'white': '白色'}
LANDMARKS_ZH = {'plant': '盆栽', 'cabinet': '柜子', 'fire extinguisher': '灭火器', 'bench': '长椅',
                'trash bin': '垃圾桶', 'vending machine': '自动售货机'}

# Keyed by (template kind, language): the families, and 'room_landmark' for a room whose target is a landmark.
_TEMPLATES: dict[tuple[str, str], tuple[str, ...]] = {
    ('door_ahead', 'en'): ('go down the corridor and stop at the {colour} door',
                           'walk straight ahead and stop in front of the {colour} door',
                           'find the {colour} door and stop there'),
    ('door_ahead', 'zh'): ('沿着走廊走，在{colour}的门前停下', '一直往前走，停在{colour}的门前'),
    ('door_at_end', 'en'): ('go to the end of the corridor and stop at the door',
                            'walk to the door at the end of the corridor and stop'),
    ('door_at_end', 'zh'): ('向前走，找到走廊尽头的门', '走到走廊尽头的门前停下'),
    ('door_ordinal', 'en'): ('turn {hand} at the {nth} door and stop', 'stop at the {nth} door on the {hand}',
                             'go to the {nth} door on your {hand} and stop'),
    ('door_ordinal', 'zh'): ('走到{hand}边第{nth}扇门前停下', '在{hand}手边第{nth}个门前停下'),
    ('turn_at_junction', 'en'): ('turn {turn} at the junction and stop at the {colour} door',
                                 'at the junction turn {turn}, then stop at the {colour} door'),
    ('turn_at_junction', 'zh'): ('在路口{turn}，停在{colour}的门前', '走到路口{turn}，在{colour}的门前停下'),
    ('multi_turn', 'en'): ('follow the corridor, turn {turns} and stop at the {colour} door',
                           'go down the corridor, turn {turns}, and stop in front of the {colour} door'),
    ('multi_turn', 'zh'): ('沿着走廊走，{turns}，在{colour}的门前停下', '顺着走廊{turns}，停在{colour}的门前'),
    ('past_landmark', 'en'): ('walk past the {landmark} and stop at the {colour} door',
                              'go past the {landmark}, then stop in front of the {colour} door'),
    ('past_landmark', 'zh'): ('走过{landmark}，在{colour}的门前停下', '经过{landmark}以后，停在{colour}的门前'),
    ('landmark_goal', 'en'): ('stop in front of the {landmark}', 'find the {landmark} and stop in front of it',
                              'go to the {landmark} and stop'),
    ('landmark_goal', 'zh'): ('在{landmark}前面停下', '找到{landmark}，在它前面停下'),
    ('room', 'en'): ('go into the room and stop at the {colour} door',
                     'follow the corridor into the room and stop in front of the {colour} door'),
    ('room', 'zh'): ('走进房间，停在{colour}的门前', '沿着走廊走进房间，在{colour}的门前停下'),
    ('room_landmark', 'en'): ('go into the room and stop in front of the {landmark}',),
    ('room_landmark', 'zh'): ('走进房间，在{landmark}前面停下',),
}
_NTH = {'en': ('first', 'second', 'third'), 'zh': ('一', '二', '三')}
_HAND = {'en': {1: 'left', -1: 'right'}, 'zh': {1: '左', -1: '右'}}
_TURN = {'en': {1: 'left', -1: 'right'}, 'zh': {1: '左转', -1: '右转'}}
MAX_ORDINAL = len(_NTH['en'])    # 'the third door' is as far as an instruction counts


def colour_word(colour: str, language: str) -> str:
    return COLOURS_ZH[colour] if language == 'zh' else colour


def landmark_word(name: str, language: str) -> str:
    return LANDMARKS_ZH[name] if language == 'zh' else name


def ordinal_word(index: int, language: str) -> str:
    """'first', 'second', 'third' (or 一, 二, 三) for index 0, 1, 2."""
    return _NTH[language][index]


def hand_word(hand: int, language: str) -> str:
    """The side: +1 left, -1 right."""
    return _HAND[language][hand]


def write(rng: np.random.Generator, template_kind: str, language: str, words: dict[str, str],
          turns: list[int]) -> str:
    """One of the template kind's templates, drawn from rng, its blanks filled with `words` (already in
    `language`) and the route's turns (+1 left, -1 right), in order."""
    fill = dict(words)
    if turns:
        names = [_TURN[language][t] for t in turns]
        fill['turn'] = names[0]
        if language == 'zh':
            fill['turns'] = names[0] if len(names) == 1 else '先' + '，再'.join(names)
        else:
            fill['turns'] = names[0] if len(names) == 1 else ', then turn '.join(names)
    templates = _TEMPLATES[(template_kind, language)]
    return templates[int(rng.integers(len(templates)))].format(**fill)
