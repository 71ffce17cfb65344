"""Prompts, answer format size, tasks, the replay backend, recordings, and the lmdeploy backend's request
building (without lmdeploy). No ROS graph."""
from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time

import pytest

from vln_ros.core.backends import make_backend
from vln_ros.core.backends.base import AnswerRecord, AnswerRecorder, BackendError, Request, load_records
from vln_ros.core.backends.lmdeploy_pipeline import (
    INSTALL_HINT,
    LmdeployParams,
    chat_messages,
    check_model_path,
    engine_config_kwargs,
    gen_config_kwargs,
    mm_processor_kwargs,
)
from vln_ros.core.backends.replay import ReplayBackend, ReplayParams
from vln_ros.core.config import InferenceParams, ParserParams, StartupError
from vln_ros.core.parser import parse_answer
from vln_ros.core.prompts import ACTIONS, PromptBuilder, Step, qwen_tokenizer
from vln_ros.core.tasks import State, TaskManager, TaskRejected

LIMITS = ParserParams()
TYPICAL_ANSWER = ('{"env":"corridor, red door ahead on the left","act":"forward",'
                  '"wp":[[0.8,0,0,0.9],[0.6,0.2,20,0.7]]}')


def request(stamp_ns=1, guided=True, prompt=None):
    prompt = prompt or PromptBuilder(LIMITS, 4).build('go to the red door', [])
    return Request(b'\xff\xd8jpeg', stamp_ns, prompt, 128, guided, 200_704)


# -- prompts and the answer format ------------------------------------------------------------------

def test_prompt_holds_instruction_recent_history_and_the_format():
    builder = PromptBuilder(LIMITS, history_steps=2)
    history = [Step(f'scene {i}', 'forward') for i in range(5)]
    prompt = builder.build('stop at the red door', history)
    assert 'Instruction: stop at the red door' in prompt.user
    assert 'scene 3 -> forward' in prompt.user and 'scene 4 -> forward' in prompt.user
    assert 'scene 2' not in prompt.user  # only the last history_steps
    for action in ACTIONS:
        assert action in prompt.system
    assert f'at most {LIMITS.max_waypoints} steps' in prompt.system
    assert prompt.schema['properties']['wp']['maxItems'] == LIMITS.max_waypoints
    assert PromptBuilder(LIMITS, 0).build('x', history).user.count('->') == 0
    # the digest changes with anything the model is told, and only with that
    assert prompt.digest() == builder.build('stop at the red door', history).digest()
    assert prompt.digest() != builder.build('stop at the blue door', history).digest()


def test_the_example_answer_fits_the_schema_and_parses():
    schema = PromptBuilder(LIMITS, 4).schema
    answer = json.loads(TYPICAL_ANSWER)
    assert set(answer) == set(schema['required'])
    assert answer['act'] in schema['properties']['act']['enum']
    assert all(len(w) == 4 for w in answer['wp'])
    assert parse_answer(TYPICAL_ANSWER, LIMITS).rejection is None


def test_answer_format_is_compact_in_real_qwen_tokens():
    """Output tokens are the latency (GPU.md: 5-7 ms each on the large models)."""
    tokenizer = qwen_tokenizer()
    count = len(tokenizer.encode(TYPICAL_ANSWER).ids)
    verbose = json.dumps({'environment': 'corridor, red door ahead on the left', 'action': 'forward',
                          'waypoints': [{'dx': 0.8, 'dy': 0.0, 'dtheta': 0.0, 'confidence': 0.9},
                                        {'dx': 0.6, 'dy': 0.2, 'dtheta': 0.349, 'confidence': 0.7}]})
    assert count <= 50, count
    assert count < 0.6 * len(tokenizer.encode(verbose).ids)
    assert tokenizer.encode('<|vision_start|><|image_pad|><|vision_end|>').ids == [151652, 151655, 151653]


# -- tasks --------------------------------------------------------------------------------------------

def test_task_lifecycle_history_and_failures():
    tasks = TaskManager(history_max=3, failure_threshold=2)
    with pytest.raises(TaskRejected, match='empty'):
        tasks.start('   ')
    first = tasks.start('go to the door')
    assert tasks.state == State.ACTIVE and tasks.is_current(first.task_id)
    for i in range(5):
        tasks.succeeded(Step(f's{i}', 'forward'), 0.5, arrived=False)
    assert [s.environment for s in tasks.history()] == ['s2', 's3', 's4']  # bounded
    tasks.failed('parse', 'bad', 0.1)
    assert tasks.state == State.ACTIVE
    tasks.failed('backend', 'oom', 0.1)
    assert tasks.state == State.FAILED and tasks.running and '2 failed answers in a row' in tasks.reason
    tasks.succeeded(Step('s5', 'forward'), 0.5, arrived=False)
    assert tasks.state == State.ACTIVE and first.counters.consecutive_failures == 0
    assert (first.counters.parse_failures, first.counters.backend_failures, first.counters.plans_published) == (
        1, 1, 8)
    second = tasks.start('now the kitchen')
    assert second.task_id != first.task_id and not tasks.is_current(first.task_id) and tasks.history() == []
    tasks.succeeded(Step('kitchen', 'arrived'), 0.4, arrived=True)
    assert tasks.state == State.STOPPED and not tasks.running and not tasks.is_current(second.task_id)
    assert not tasks.stop('again')


def test_no_task_while_loading():
    tasks = TaskManager(10, 3)
    tasks.loading(done=False)
    with pytest.raises(TaskRejected, match='loading'):
        tasks.start('go')


# -- replay backend and recordings ------------------------------------------------------------------

def write_recording(path, *records):
    recorder = AnswerRecorder(path)
    for r in records:
        recorder.write(r)
    recorder.close()
    return path


def record(text='{"act":"stop","wp":[]}', stamp_ns=0, latency_s=0.0, error=''):
    return AnswerRecord(stamp_ns=stamp_ns, task_id='t', instruction='i', prompt_hash='h', text=text,
                        latency_s=latency_s, output_tokens=7, error=error, model='Qwen3-VL-8B-Instruct')


def test_recording_round_trip(tmp_path):
    path = write_recording(tmp_path / 'r.jsonl', record('a', 5, 0.25), record('', 6, 0.5, error='timeout'))
    assert load_records(path) == [record('a', 5, 0.25), record('', 6, 0.5, error='timeout')]
    (tmp_path / 'bad.jsonl').write_text('{"stamp_ns": 1}\n')
    with pytest.raises(ValueError, match='bad.jsonl:1'):
        load_records(tmp_path / 'bad.jsonl')


def test_replay_in_order_with_recorded_latency_and_failures(tmp_path):
    path = write_recording(tmp_path / 'r.jsonl', record('first', latency_s=0.2), record('', latency_s=0.0,
                                                                                        error='oom'))
    backend = ReplayBackend(ReplayParams(file=str(path)), 'fallback')
    assert backend.model_name == 'Qwen3-VL-8B-Instruct'
    started = time.perf_counter()
    answer = backend.generate(request())
    assert answer.text == 'first' and answer.output_tokens == 7 and time.perf_counter() - started >= 0.2
    with pytest.raises(BackendError) as failed:
        backend.generate(request())
    assert failed.value.reason == 'oom'
    with pytest.raises(BackendError) as exhausted:
        backend.generate(request())
    assert exhausted.value.reason == 'no_recorded_answer'
    looping = ReplayBackend(ReplayParams(file=str(path), loop=True, use_recorded_latency=False), 'x')
    assert looping.generate(request()).text == 'first'
    with pytest.raises(BackendError):
        looping.generate(request())
    assert looping.generate(request()).text == 'first'


def test_replay_by_stamp(tmp_path):
    path = write_recording(tmp_path / 'r.jsonl', record('at 5', 5), record('at 9', 9))
    backend = ReplayBackend(ReplayParams(file=str(path), match='stamp'), 'x')
    assert backend.generate(request(9)).text == 'at 9'
    assert backend.generate(request(5)).text == 'at 5'
    with pytest.raises(BackendError, match='no answer recorded for keyframe stamp 7'):
        backend.generate(request(7))


def test_replay_cancel_ends_a_long_answer_at_once(tmp_path):
    backend = ReplayBackend(ReplayParams(file=str(write_recording(tmp_path / 'r.jsonl', record(latency_s=30)))), 'x')
    threading.Timer(0.2, backend.cancel).start()
    started = time.perf_counter()
    with pytest.raises(BackendError) as cancelled:
        backend.generate(request())
    assert cancelled.value.reason == 'cancelled' and time.perf_counter() - started < 2.0


@pytest.mark.parametrize(('content', 'message'), [
    (None, 'cannot be read'), ('', 'holds no answers'), ('not json\n', 'r.jsonl:1: not an answer record')])
def test_replay_file_problems_stop_start_up_with_the_fix(tmp_path, content, message):
    path = tmp_path / 'r.jsonl'
    if content is not None:
        path.write_text(content)
    with pytest.raises(StartupError, match=message):
        make_backend(InferenceParams(backend='replay', replay=ReplayParams(file=str(path))))


# -- lmdeploy: what would be sent, checked without lmdeploy -----------------------------------------

def test_lmdeploy_engine_config():
    assert engine_config_kwargs(LmdeployParams()) == {
        'tp': 4, 'session_len': 8192, 'cache_max_entry_count': 0.8, 'max_batch_size': 4,
        'max_prefill_token_num': 8192, 'eager_mode': False}
    assert engine_config_kwargs(LmdeployParams(max_prefill_token_num=2048))['max_prefill_token_num'] == 2048
    assert engine_config_kwargs(LmdeployParams(tp=2, executor='mp'))['distributed_executor_backend'] == 'mp'
    assert 'distributed_executor_backend' not in engine_config_kwargs(LmdeployParams(tp=1, executor='mp'))
    turbomind = engine_config_kwargs(LmdeployParams(engine='turbomind', eager_mode=True, executor='ray'))
    assert 'eager_mode' not in turbomind and 'distributed_executor_backend' not in turbomind
    assert engine_config_kwargs(LmdeployParams(weights='fp8', prefix_caching=True))['model_format'] == 'fp8'
    assert engine_config_kwargs(LmdeployParams(prefix_caching=True))['enable_prefix_caching'] is True
    assert 'model_format' not in engine_config_kwargs(LmdeployParams())


def test_lmdeploy_messages_and_generation_config():
    req = request(guided=True)
    image = object()  # stands for the PIL image
    system, user = chat_messages(req, image)
    assert system == {'role': 'system', 'content': req.prompt.system}
    assert user['content'][0] == {'type': 'image_data', 'image_data': {'data': image, 'max_pixels': 200_704}}
    assert user['content'][1] == {'type': 'text', 'text': req.prompt.user}
    guided = gen_config_kwargs(req)
    assert guided == {'max_new_tokens': 128, 'do_sample': False, 'response_format': {
        'type': 'json_schema', 'json_schema': {'name': 'vln_plan', 'schema': req.prompt.schema}}}
    assert 'response_format' not in gen_config_kwargs(request(guided=False))
    assert 'ignore_eos' not in guided


def test_lmdeploy_image_budget_is_keyed_by_modality():
    # lmdeploy 0.18 reads mm_processor_kwargs['image'] and ignores both bounds when min > max
    assert mm_processor_kwargs(request()) == {'image': {'min_pixels': 1024, 'max_pixels': 200_704}}
    small = dataclasses.replace(request(), image_max_pixels=512)
    assert mm_processor_kwargs(small) == {'image': {'min_pixels': 512, 'max_pixels': 512}}
    assert gen_config_kwargs(dataclasses.replace(request(), ignore_eos=True))['ignore_eos'] is True


def test_lmdeploy_missing_fails_start_up_with_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, 'lmdeploy', None)  # import lmdeploy -> ImportError, installed or not
    with pytest.raises(StartupError) as missing:
        make_backend(InferenceParams())
    assert str(missing.value) == INSTALL_HINT and "pip install '.[lmdeploy]'" in INSTALL_HINT


def test_missing_local_model_path_is_named(tmp_path):
    with pytest.raises(StartupError, match='models/README.md'):
        check_model_path('models/Qwen3-VL-32B-Instruct-not-here')
    check_model_path(str(tmp_path))            # exists
    check_model_path('Qwen/Qwen3-VL-8B-Instruct')  # a hub id is lmdeploy's to resolve
