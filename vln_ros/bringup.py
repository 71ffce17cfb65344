"""The vln_ros stack in one place: its nodes, the side each runs on, their executables, parameter files and
remappings, and the launch arguments that shape them. (Every process inherits the environment, the DDS
transports included: see LARGE_DATA_ENV.)

launch/*.launch.py declare the arguments and hand the rest to `launch_actions` (the only code here that
imports launch, when a launch file runs): it checks that every executable exists before anything starts,
and makes the nodes a launch cannot do without required (a non-zero exit ends the launch, non-zero).
Everything else is pure Python: `make demo` (vln_ros/demo/stack.py) and the tests start the very same
processes from it without launch (`Process.command`). Change the stack here, never in a launch file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from enum import Enum
from functools import partial
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from vln_ros import interface as ri
from vln_ros.core.config import InferenceParams, is_relative_namespace, load_node_yaml
from vln_ros.core.schema import NAMESPACE_RULE
from vln_ros.sim.api import DEFAULT_PORT, local_url
from vln_ros.sim.params import MAX_ROBOTS

PACKAGE = 'vln_ros'
PARAMS_FILE = os.path.join('config', 'vln.yaml')   # relative to the package's share folder
RVIZ_CONFIG = os.path.join('config', 'vln.rviz')
# Raw images (sensor_msgs/Image) over Fast DDS's default transports are silently lost between processes; the
# fix is this in the environment of EVERY process of the graph (README, "Large images over Fast DDS"), so the
# launch files never set it for a process of their own: they inherit the graph's transports. Measured with a
# process of its own given it (the launch files did so before): it and a process with the default transports
# never heard each other, so from a plain shell the controller never got a plan and `ros2 service call
# /vln/set_task` never found the inference node. launch_actions says so when raw-image nodes start without it.
LARGE_DATA_ENV = {'FASTDDS_BUILTIN_TRANSPORTS': 'LARGE_DATA'}
CAMERA = '{camera_topic}'  # placeholder in remappings for the camera_topic argument
# After SIGINT, launch waits this long for a process before it escalates to SIGTERM (its default, 5 s, is
# shorter than the inference node's own bounded shutdown: worker 3 s + lmdeploy's shutdown_timeout_s, 10 s by
# default; and on a loaded 2-core machine a clean exit of camera or controller was seen to take over 5 s).
STOP_TIMEOUT_S = 20.0
BACKENDS: tuple[str, ...] = get_args(InferenceParams.model_fields['backend'].annotation)
# With console:=true the controller's dead-man (estop_timeout_s) is armed at this, unless the parameter file
# arms it already: console_node says `false` on vln/estop every 0.2 s while it lives, so a console killed
# (SIGKILL, OOM, a crash: nothing says `true`) stops the robot within this. Not shorter: the dead-man also
# counts from the controller's start, and console_node (aiohttp, the page's files) starts later than the
# controller; a start slower than this leaves the robot e-stopped until a release from the page.
CONSOLE_ESTOP_TIMEOUT_S = 2.0
# A parameter a launch sets: a scalar, or a string array (inference_node's robots).
LaunchValue = bool | int | float | str | tuple[str, ...]


class Side(str, Enum):
    ROBOT = 'robot'   # next to the camera and the motors: a lost link still ends in a stop
    GPU = 'gpu'       # where the model runs


@dataclass(frozen=True)
class NodeSpec:
    executable: str
    name: str
    side: Side
    remappings: tuple[tuple[str, str], ...] = ()
    raw_images: bool = False         # publishes or subscribes sensor_msgs/Image
    # Its topics and services (vln_ros/interface.py; relative to the namespace unless absolute), as it runs
    # with config/vln.yaml. test_executables checks them against the live graph.
    publishes: tuple[str, ...] = ()
    subscribes: tuple[str, ...] = ()
    services: tuple[str, ...] = ()


NODES: tuple[NodeSpec, ...] = (
    NodeSpec('camera_node', 'camera_node', Side.ROBOT,
             remappings=((ri.IMAGE, CAMERA), (ri.IMAGE_COMPRESSED, CAMERA + '/compressed')), raw_images=True,
             # + KEYFRAME_DECISIONS with publish_decisions; IMAGE_COMPRESSED instead with input_transport compressed
             publishes=(ri.KEYFRAME, ri.DIAGNOSTICS), subscribes=(ri.IMAGE, ri.KEYFRAME_REQUEST)),
    NodeSpec('inference_node', 'inference_node', Side.GPU, raw_images=True,  # vln/debug_image
             publishes=(ri.WAYPOINTS, ri.TASK_STATUS, ri.PATH, ri.MARKERS, ri.DEBUG_IMAGE, ri.DIAGNOSTICS,
                        ri.KEYFRAME_REQUEST),
             subscribes=(ri.KEYFRAME, ri.INSTRUCTION, ri.GUARD_STATUS), services=(ri.SET_TASK, ri.STOP_TASK)),
    NodeSpec('controller_node', 'controller_node', Side.ROBOT,
             publishes=(ri.CMD_VEL, ri.CONTROLLER_STATUS, ri.DIAGNOSTICS),
             subscribes=(ri.WAYPOINTS, ri.ODOM, ri.ESTOP), services=(ri.RELEASE_ESTOP,)),
)
# The operator console (launch argument console): not one of NODES, so `nodes:=all` does not start it.
CONSOLE = NodeSpec('console_node', 'console_node', Side.ROBOT,
                   publishes=(ri.ESTOP, ri.DIAGNOSTICS),
                   subscribes=(ri.KEYFRAME, ri.WAYPOINTS, ri.TASK_STATUS, ri.CMD_VEL, ri.CONTROLLER_STATUS,
                               ri.GUARD_STATUS, ri.DIAGNOSTICS))
# The collision guard alone (cmd_vel_in -> cmd_vel_out), for a base that teleop or a twist_mux also drives:
# not one of NODES either (`nodes:=all` does not start it); started by name (`nodes:=robot,guard_node`) or by
# guard.launch.py. Its guard.* parameters come from the parameter file's guard_node section.
GUARD = NodeSpec('guard_node', 'guard_node', Side.ROBOT,
                 publishes=(ri.CMD_VEL_OUT, ri.GUARD_STATUS, ri.GUARD_MARKERS, ri.DIAGNOSTICS),
                 subscribes=(ri.CMD_VEL_IN,))
BAG_EXECUTABLE = 'vln_bag'
SIM_EXECUTABLE = 'sim_node'
# camera.launch.py: the camera node alone, with these of vln.launch.py's arguments.
CAMERA_ONLY = {'nodes': 'camera_node'}
CAMERA_ARGUMENTS = ('namespace', 'params_file', 'use_sim_time', 'camera_topic')
# guard.launch.py: guard_node alone, with these of vln.launch.py's arguments.
GUARD_ONLY = {'nodes': GUARD.name}
GUARD_ARGUMENTS = ('namespace', 'params_file', 'use_sim_time')
# robot.launch.py: one robot's side (RobotArgs), with these arguments.
ROBOT_ONLY = {'nodes': Side.ROBOT.value}
ROBOT_ARGUMENTS = ('namespace', 'params_file', 'use_sim_time', 'camera_topic', 'console', 'rviz', 'guard')
# fleet.launch.py: the server side of several robots (FleetArgs), with these arguments. No namespace (the robots
# are the namespaces), no console or rviz2 (one each per robot, on the robot: robot.launch.py).
FLEET_ARGUMENTS = ('robots', 'shape', 'nodes', 'params_file', 'use_sim_time', 'backend', 'model', 'tp',
                   'openai_url', 'camera_topic')
RVIZ = NodeSpec('rviz2', 'rviz2', Side.ROBOT, raw_images=True, remappings=(
    (ri.IMAGE, CAMERA),
    # rviz2 picks an image transport from the topic's last name: its Keyframe display asks for
    # vln/keyframe/compressed, which is our vln/keyframe (JPEG CompressedImage).
    (ri.KEYFRAME + '/compressed', ri.KEYFRAME)))


def _flag(value: bool) -> str:
    return 'true' if value else 'false'


class StackArgs(BaseModel):
    """The arguments of vln.launch.py: names, defaults and descriptions of the launch arguments."""

    model_config = ConfigDict(extra='forbid', frozen=True)

    namespace: str = Field('', description='Namespace of the robot: every topic of the stack is relative to it, '
                                           'so several robots can share one graph')
    params_file: str = Field('', description='ROS 2 parameter file of all nodes; empty = config/vln.yaml of '
                                             'the installed package')
    use_sim_time: bool = Field(False, description='Nodes follow /clock instead of the system clock (bag replay, '
                                                  'simulation)')
    backend: str = Field('', description=f"inference_node's backend (parameter backend): {', '.join(BACKENDS)}; "
                                         'empty = the one in the parameter file')
    model: str = Field('', description="inference_node's model: a weights path or model name (parameter model); "
                                       'empty = the one in the parameter file')
    tp: int | None = Field(None, description='inference_node: GPUs the model is split over, tensor parallel '
                                             '(parameter lmdeploy.tp); empty = the one in the parameter file')
    nodes: str = Field('all', description='Nodes to start here: all, robot (camera_node, controller_node), gpu '
                                          '(inference_node), or a comma list of node names (guard_node, the collision '
                                          'guard alone, only by name); the robot and the GPU server each launch '
                                          'their side on one ROS 2 graph')
    camera_topic: str = Field('image', description="The camera driver's sensor_msgs/Image topic (compressed: "
                                                   '<camera_topic>/compressed with input_transport: compressed)')
    rviz: bool = Field(False, description='Also start rviz2 with config/vln.rviz (camera, keyframes, plan, '
                                          'annotated keyframe, cmd_vel)')
    console: bool = Field(False, description='Also start console_node, the operator console in the browser (its '
                                             'address, port and token: the console_node section of the parameter '
                                             'file; README, "The operator console"), and arm controller_node\'s '
                                             f'dead-man: estop_timeout_s {CONSOLE_ESTOP_TIMEOUT_S} s unless the '
                                             'parameter file arms it (a console that dies stops the robot)')

    @field_validator('tp', mode='before')
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == '' else value

    @field_validator('nodes')
    @classmethod
    def _known_nodes(cls, value: str) -> str:
        select_nodes(value)
        return value

    @field_validator('backend')
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value and value not in BACKENDS:
            raise ValueError(f"backend {value!r}: expected {', '.join(BACKENDS)} or empty (the parameter file's)")
        return value

    def selection(self) -> str:
        """The nodes to start here, as `select_nodes` reads them."""
        return self.nodes


class ReplayArgs(StackArgs):
    """The arguments of replay.launch.py: a bag played with vln_bag, and the stack on its /clock."""

    bag: str = Field(description='rosbag2 bag to play (folder, .mcap or .db3), e.g. one recorded with vln_bag '
                                 'record; required')
    rate: float = Field(1.0, gt=0.0, description='Playback speed factor (2.0 = twice as fast)')
    loop: bool = Field(False, description='Play the bag again from the start until stopped')
    wait_s: float = Field(30.0, ge=0.0, description='Before playing, wait up to this long [s] until every played '
                                                    'topic has a subscriber (the inference node subscribes once its '
                                                    'model is loaded)')
    use_sim_time: bool = Field(True, description='Nodes follow the bag time the player publishes on /clock')


class SimArgs(StackArgs):
    """The arguments of sim.launch.py: sim_node (a simulated quadruped in a generated scene, the owner of
    /clock) and the stack driving it, the oracle answering unless another backend is given."""

    seed: int = Field(0, ge=0, description="The scene (vln_ros/sim/scenes.py); its instruction is in sim_node's "
                                           'log; later scenes through its side channel (make eval)')
    speed: float = Field(1.0, gt=0.0, le=20.0, description='Simulated seconds per wall-clock second (1 = real time)')
    api_port: int = Field(DEFAULT_PORT, ge=1, le=65535,
                          description="sim_node's HTTP side channel on 127.0.0.1 (episodes, ground truth, the oracle "
                                      'backend)')
    use_sim_time: bool = Field(True, description='Nodes follow the simulated time sim_node publishes on /clock')
    camera_topic: str = Field(ri.SIM_CAMERA, description="sim_node's camera (sensor_msgs/Image)")
    backend: str = Field('oracle', description=f"inference_node's backend: {', '.join(BACKENDS)}; oracle = the "
                                               "simulator's ground truth (a perfect model, docs/eval.md)")
    robots: str = Field('', description='Several robots in one world: their namespaces (r1,r2,r3), each with the '
                                        "stack of its own in its namespace (the oracle answering from that robot's "
                                        f'ground truth), at most {MAX_ROBOTS}; empty = one robot')
    shape: Literal['api', 'engine'] = Field(
        'api', description="With robots, who answers them (fleet.launch.py's shapes): api: an inference_node in "
                           'each robot namespace; engine: ONE inference_node in the root serving every robot '
                           'through one backend (its parameter robots), each answered from its own ground truth '
                           'with the oracle')

    @field_validator('robots')
    @classmethod
    def _robot_namespaces(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            return value
        if len(robot_namespaces(value)) > MAX_ROBOTS:
            raise ValueError(f'robots {value!r}: at most {MAX_ROBOTS} robots in one world')
        if str(info.data.get('namespace', '')).strip():   # StackArgs' field, validated before this one
            raise ValueError(f"robots with namespace {info.data['namespace']!r}: the robots are the namespaces (one "
                             'world, a namespace per robot)')
        return value

    @field_validator('shape')
    @classmethod
    def _shape_fits(cls, value: str, info: ValidationInfo) -> str:
        # robots and backend are validated before shape: a bad one is reported as itself
        if value == 'engine' and not str(info.data.get('robots', '')).strip():
            raise ValueError('shape engine without robots: one inference_node serving several robots needs their '
                             'namespaces (robots:=r1,r2)')
        if value == 'engine' and info.data.get('backend') == 'replay':
            raise ValueError("shape engine with backend 'replay': a recording holds one robot's answers; use shape "
                             'api (an inference_node per robot)')
        return value

    def robot_names(self) -> tuple[str, ...]:
        """The robots' namespaces; () for one robot (in `namespace`)."""
        return robot_namespaces(self.robots) if self.robots.strip() else ()


def robot_namespace(name: str) -> str:
    """A robot's namespace as given (`r1`, `/r1`, `site_a/r1`) -> relative (`r1`, `site_a/r1`): tokens of letters,
    digits and underscores, not starting with a digit, separated by single '/'. ValueError naming the bad one."""
    relative = name.strip()
    relative = relative[1:] if relative.startswith('/') else relative
    if not is_relative_namespace(relative):
        raise ValueError(f'robot namespace {name!r} is not a ROS namespace ({NAMESPACE_RULE})')
    return relative


def robot_namespaces(text: str) -> tuple[str, ...]:
    """`r1,r2,r3` -> ('r1', 'r2', 'r3'), each a relative ROS namespace, each once: a duplicate would start two
    pipelines for one robot's keyframes (`/r1` and `r1` are the same robot). ValueError naming the bad one."""
    names = [part.strip() for part in text.split(',')]
    if not any(names):
        raise ValueError(f'robots {text!r}: name at least one robot namespace, e.g. robots:=r1,r2')
    robots: list[str] = []
    for given in names:
        if not given:
            raise ValueError(f'robots {text!r}: an empty name (two commas, or one at an end)')
        robot = robot_namespace(given)
        if robot in robots:
            raise ValueError(f'robots {text!r}: {robot!r} is listed twice (each robot once)')
        robots.append(robot)
    return tuple(robots)


class RobotArgs(StackArgs):
    """The arguments of robot.launch.py: one robot's side in its namespace (camera_node and controller_node, and
    guard_node with guard:=true), for a robot of a fleet whose inference runs elsewhere (fleet.launch.py)."""

    guard: bool = Field(False, description='Also start guard_node, the collision guard alone (cmd_vel_in -> '
                                           'cmd_vel_out, its guard.* parameters from the parameter file), for a '
                                           'base that teleop or a twist_mux also drives (guard.launch.py)')

    @field_validator('namespace')
    @classmethod
    def _ros_namespace(cls, value: str) -> str:
        return robot_namespace(value) if value.strip() else value

    def selection(self) -> str:
        return self.nodes + (f',{GUARD.name}' if self.guard else '')


class FleetArgs(StackArgs):
    """The arguments of fleet.launch.py: the server side of several robots, each in its namespace (each robot
    runs robot.launch.py namespace:=<name>), in one of two shapes (docs/fleet.md)."""

    robots: str = Field(description="Robot namespaces, comma separated (r1,r2,r3), each once; each robot runs "
                                    'robot.launch.py namespace:=<name>; required')
    shape: Literal['engine', 'api'] = Field(
        'engine', description='engine: ONE inference_node (root namespace) serving every robot through one '
                              'in-process engine (its parameter robots), batching across robots; api: one '
                              'inference_node per robot namespace with the openai backend, against `lmdeploy '
                              'serve api_server` or `lmdeploy serve proxy` (openai_url). docs/fleet.md says which, '
                              'measured')
    openai_url: str = Field('', description="Base URL the inference nodes' openai backend asks (parameter "
                                            'openai.base_url), e.g. http://<proxy>:8000/v1; empty = the one in '
                                            'the parameter file')
    nodes: str = Field(Side.GPU.value, description='Nodes to start here: gpu (the inference side: one node, or one '
                                                   'per robot with shape api), robot (camera_node and '
                                                   'controller_node in each robot namespace, for robots simulated '
                                                   'or tested on this machine), all, or a comma list of node names')

    @field_validator('robots')
    @classmethod
    def _robot_namespaces(cls, value: str) -> str:
        robot_namespaces(value)
        return value

    @field_validator('namespace')
    @classmethod
    def _no_namespace(cls, value: str) -> str:
        if value.strip():
            raise ValueError(f'namespace {value!r}: a fleet has no namespace of its own, its robots are the '
                             'namespaces (robots:=...)')
        return value

    @field_validator('shape')
    @classmethod
    def _shape_fits(cls, value: str, info: ValidationInfo) -> str:
        # backend and tp (StackArgs' fields) are validated before shape: a bad one is reported as itself
        backend, tp = info.data.get('backend', ''), info.data.get('tp')
        if value == 'api' and backend not in ('', 'openai'):
            raise ValueError(f"shape api with backend {backend!r}: each robot's inference_node asks an api_server "
                             '(backend openai); shape engine runs another backend in-process')
        if value == 'api' and tp is not None:
            raise ValueError(f'shape api with tp {tp}: the api_server has the GPUs (its --tp); tp is for shape '
                             'engine')
        return value

    def robot_names(self) -> tuple[str, ...]:
        return robot_namespaces(self.robots)


@dataclass(frozen=True)
class Argument:
    name: str
    default: str | None   # None: required
    description: str


def launch_arguments(model: type[StackArgs]) -> list[Argument]:
    """Launch arguments (name, default as launch text, description) of a launch file, from its model."""
    arguments = []
    for name, info in model.model_fields.items():
        if info.is_required():
            default = None
        elif isinstance(info.default, bool):
            default = _flag(info.default)
        else:
            default = '' if info.default is None else str(info.default)
        arguments.append(Argument(name, default, info.description or ''))
    return arguments


def declared_arguments(model: type[StackArgs], names: tuple[str, ...]) -> list[Argument]:
    """The launch arguments of a launch file that declares only `names` of its model, in that order (what
    --show-args lists first comes first: fleet.launch.py's robots)."""
    arguments = {a.name: a for a in launch_arguments(model)}
    return [arguments[name] for name in names]


def parse_args(model: type[StackArgs], values: dict[str, str]) -> StackArgs:
    """Launch argument values (text) -> the validated model; ValueError naming the bad argument."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = '; '.join(f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})"
                             for e in exc.errors())
        raise ValueError(f'bad launch argument: {problems}') from None


def select_nodes(selection: str) -> list[NodeSpec]:
    """'all', a side ('robot', 'gpu') or a comma list of node names -> the nodes to start, in stack order.
    guard_node only by its name (all and robot stay what they were)."""
    wanted = {part.strip() for part in selection.split(',') if part.strip()}
    names = {n.name for n in (*NODES, GUARD)}
    unknown = wanted - names - {'all'} - {s.value for s in Side}
    if unknown or not wanted:
        raise ValueError(f"nodes {selection!r}: expected all, {', '.join(s.value for s in Side)} or a comma list "
                         f"of {', '.join(sorted(names))}")
    return ([n for n in NODES if 'all' in wanted or n.side.value in wanted or n.name in wanted]
            + [GUARD] * (GUARD.name in wanted))


@dataclass(frozen=True)
class Process:
    """One process of the stack, as launch_ros' Node starts it and as the tests start it."""

    package: str
    executable: str
    name: str
    namespace: str = ''
    params_files: tuple[str, ...] = ()
    parameters: dict[str, LaunchValue] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()
    env: dict[str, str] = field(default_factory=dict)   # added to the inherited environment (none of ours)
    arguments: tuple[str, ...] = ()
    required: bool = True   # a non-zero exit ends the launch (launch_actions); rviz2 is not

    def launch_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of launch_ros.actions.Node."""
        return {'package': self.package, 'executable': self.executable, 'name': self.name,
                'namespace': self.namespace, 'parameters': [*self.params_files, {
                    k: list(v) if isinstance(v, tuple) else v for k, v in self.parameters.items()}],
                'remappings': list(self.remappings), 'additional_env': dict(self.env),
                'arguments': list(self.arguments)}

    def with_parameters(self, extra: dict[str, LaunchValue]) -> Process:
        """This process with more parameters (they win over the parameter files, as in launch)."""
        return replace(self, parameters={**self.parameters, **extra})

    def command(self, executable_path: str) -> list[str]:
        """The command line launch_ros runs for launch_kwargs(), with parameters as -p instead of the
        temporary file launch writes them to."""
        ros_args = ['--ros-args', '-r', f'__node:={self.name}']
        if self.namespace:
            ros_args += ['-r', f'__ns:=/{self.namespace.strip("/")}']
        for path in self.params_files:
            ros_args += ['--params-file', path]
        for key, value in self.parameters.items():
            ros_args += ['-p', f'{key}:={_param_text(value)}']
        for source, target in self.remappings:
            ros_args += ['-r', f'{source}:={target}']
        return [executable_path, *self.arguments, *ros_args]


def _param_text(value: LaunchValue) -> str:
    """A parameter value as `-p name:=<text>` reads it (YAML): true/false, a number, a string, [a, b]."""
    if isinstance(value, bool):
        return _flag(value)
    if isinstance(value, tuple):
        return f"[{', '.join(value)}]"
    return str(value)


def _remap(spec: NodeSpec, args: StackArgs) -> tuple[tuple[str, str], ...]:
    return tuple((source, target.replace(CAMERA, args.camera_topic)) for source, target in spec.remappings)


def node_process(spec: NodeSpec, args: StackArgs, share_dir: str) -> Process:
    parameters: dict[str, LaunchValue] = {'use_sim_time': args.use_sim_time}
    if spec.name == 'inference_node':
        if args.backend:
            parameters['backend'] = args.backend
        if isinstance(args, SimArgs) and args.backend == 'oracle':
            parameters['oracle.url'] = local_url(args.api_port)
        if args.model:
            parameters['model'] = args.model
        if args.tp is not None:
            parameters['lmdeploy.tp'] = args.tp
    params_file = args.params_file or os.path.join(share_dir, PARAMS_FILE)
    if spec.name == 'controller_node' and args.console and not _deadman_armed(params_file, args.namespace):
        parameters['estop_timeout_s'] = CONSOLE_ESTOP_TIMEOUT_S
    return Process(PACKAGE, spec.executable, spec.name, args.namespace, (params_file,), parameters,
                   _remap(spec, args))


def _deadman_armed(params_file: str, namespace: str) -> bool:
    """The parameter file gives controller_node a non-zero estop_timeout_s (it is kept with console:=true). A
    file that cannot be read counts as not arming it: the node itself reports that file's problem."""
    try:
        value = load_node_yaml(params_file, 'controller_node', namespace or '/').get('estop_timeout_s', 0.0)
        return float(value) > 0.0
    except Exception:  # noqa: BLE001 - unreadable, not YAML, not a parameter file: the node says which
        return False


def stack(args: StackArgs, share_dir: str) -> list[Process]:
    """The node processes to start here (args.nodes), then the console and rviz2 if asked (neither is
    required: a console that cannot start, its port taken say, must not end the robot's launch)."""
    processes = [node_process(spec, args, share_dir) for spec in select_nodes(args.selection())]
    if args.console:
        processes.append(replace(node_process(CONSOLE, args, share_dir), required=False))
    if args.rviz:
        processes.append(Process('rviz2', RVIZ.executable, RVIZ.name, args.namespace, (),
                                 {'use_sim_time': args.use_sim_time}, _remap(RVIZ, args),
                                 arguments=('-d', os.path.join(share_dir, RVIZ_CONFIG)), required=False))
    return processes


def fleet(args: FleetArgs, share_dir: str) -> list[Process]:
    """fleet.launch.py's processes, in stack order. The inference side: shape engine, ONE inference_node in the
    root namespace with `robots` (it serves <robot>/vln/... of each); shape api, one inference_node in each robot
    namespace with the openai backend. The robot side (nodes:=robot or all): camera_node and controller_node in
    each robot namespace, as robot.launch.py starts them there."""
    robots = args.robot_names()
    openai: dict[str, LaunchValue] = {'openai.base_url': args.openai_url} if args.openai_url else {}
    processes: list[Process] = []
    for spec in select_nodes(args.selection()):
        if spec.side is Side.GPU and args.shape == 'engine':
            processes.append(node_process(spec, args, share_dir).with_parameters({'robots': robots, **openai}))
        elif spec.side is Side.GPU:
            processes += [node_process(spec, args.model_copy(update={'namespace': robot}), share_dir)
                          .with_parameters({'backend': 'openai', **openai}) for robot in robots]
        else:
            processes += [node_process(spec, args.model_copy(update={'namespace': robot}), share_dir)
                          for robot in robots]
    return processes


def stack_outputs(args: StackArgs) -> list[str]:
    """Absolute names of the topics the nodes started here publish."""
    prefix = '/' + args.namespace.strip('/') if args.namespace.strip('/') else ''
    topics = {t if t.startswith('/') else f'{prefix}/{t}' for n in select_nodes(args.selection()) for t in n.publishes}
    return sorted(topics)


def player(args: ReplayArgs) -> Process:
    """vln_bag play for replay.launch.py: bag time on /clock, and not the topics the stack started here
    publishes itself (a bag of a live run holds its keyframes, plans and cmd_vel too)."""
    arguments = ['play', args.bag, '--rate', str(args.rate), '--clock', '--wait-for-subscribers', str(args.wait_s),
                 '--exclude-topics', *stack_outputs(args)]
    if args.loop:
        arguments.append('--loop')
    return Process(PACKAGE, BAG_EXECUTABLE, 'vln_bag_player', arguments=tuple(arguments))


def simulator(args: SimArgs) -> Process:
    """sim_node for sim.launch.py: on its own clock (it publishes /clock), never use_sim_time."""
    return Process(PACKAGE, SIM_EXECUTABLE, SIM_EXECUTABLE, args.namespace, parameters={
        'seed': args.seed, 'speed': args.speed, 'api_port': args.api_port})


def sim_world(args: SimArgs, share_dir: str) -> list[Process]:
    """sim.launch.py robots:=r1,r2: ONE sim_node holding every robot (r1/odom, r1/camera/image_raw, ...) and, in each
    robot's namespace, the stack as sim.launch.py starts it for one robot; with the oracle, each inference_node
    answers from its own robot's ground truth (oracle.robot). Shape engine: the robots' inference_nodes are ONE,
    in the root, serving every robot (fleet.launch.py's shape engine; the oracle's client per robot asks for that
    robot's ground truth)."""
    robots = args.robot_names()
    started = [simulator(args).with_parameters({'robots': robots})]
    one_robot = args.model_copy(update={'robots': '', 'shape': 'api'})
    if args.shape == 'engine':
        started += [node_process(spec, one_robot, share_dir).with_parameters({'robots': robots})
                    for spec in select_nodes(args.selection()) if spec.name == 'inference_node']
    for robot in robots:
        for process in stack(one_robot.model_copy(update={'namespace': robot}), share_dir):
            if process.name == 'inference_node' and args.shape == 'engine':
                continue
            own = process.name == 'inference_node' and args.backend == 'oracle'
            started.append(process.with_parameters({'oracle.robot': robot}) if own else process)
    return started


def processes(model: type[StackArgs], values: dict[str, str], share_dir: str) -> list[Process]:
    """What a launch file starts for its argument values: the simulator when simulating, the stack, and the
    player when replaying."""
    args = parse_args(model, values)
    if isinstance(args, FleetArgs):
        return fleet(args, share_dir)
    if isinstance(args, SimArgs) and args.robot_names():
        return sim_world(args, share_dir)
    return [*([simulator(args)] if isinstance(args, SimArgs) else []), *stack(args, share_dir),
            *([player(args)] if isinstance(args, ReplayArgs) else [])]


def missing_executables(started: list[Process]) -> list[str]:
    """Why launch_ros could not start each of these processes (it runs <prefix>/lib/<package>/<executable> of
    the package's ament prefix), as the fix to make; [] when all of them can start."""
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    problems = []
    for process in started:
        try:
            prefix = get_package_prefix(process.package)
        except PackageNotFoundError:
            if process.package == RVIZ.executable:
                problems.append('rviz2 is not installed (rviz:=true): install it (apt install ros-$ROS_DISTRO-rviz2) '
                                'or launch without rviz:=true')
            else:
                problems.append(f'package {process.package} is not installed (AMENT_PREFIX_PATH)')
            continue
        path = os.path.join(prefix, 'lib', process.package, process.executable)
        if not os.access(path, os.X_OK):
            problems.append(f'{path} is missing: build the package again (colcon build, or tools/install.sh for '
                            'the venv)')
    return problems


def transport_note(started: list[Process], environ: dict[str, str]) -> str | None:
    """A line for the launch log when processes carrying raw images start over Fast DDS's default transports."""
    raw = [p.name for p in started if any(n.name == p.name and n.raw_images for n in (*NODES, RVIZ))]
    if not raw or environ.get('FASTDDS_BUILTIN_TRANSPORTS') or environ.get('FASTDDS_DEFAULT_PROFILES_FILE'):
        return None
    return (f"{', '.join(raw)}: raw images (sensor_msgs/Image) over ~0.5 MB are lost over Fast DDS's default "
            'transports; for raw camera frames export FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA for every process of '
            'the graph (the camera driver too), or use input_transport: compressed (README, "Large images over '
            'Fast DDS")')


def launch_actions(context: Any, model: type[StackArgs], arguments: list[Argument],
                   fixed: dict[str, str] | None = None) -> list[Any]:
    """The OpaqueFunction of every launch file: the values of its `arguments` (plus `fixed` ones) -> the Node
    actions of `processes`, each required one watched. Raises (launch then exits 1 and starts nothing) on a
    bad argument or an executable that is not installed, before any process starts."""
    from ament_index_python.packages import get_package_share_directory
    from launch.actions import LogInfo, RegisterEventHandler
    from launch.event_handlers import OnProcessExit
    from launch_ros.actions import Node

    values = {a.name: context.launch_configurations[a.name] for a in arguments}
    started = processes(model, {**values, **(fixed or {})}, get_package_share_directory(PACKAGE))
    problems = missing_executables(started)
    if problems:
        raise RuntimeError(f"nothing started: {'; '.join(problems)}")
    note = transport_note(started, dict(os.environ))
    actions: list[Any] = [LogInfo(msg=note)] if note else []
    for process in started:
        node = Node(output='screen', emulate_tty=True, sigterm_timeout=str(STOP_TIMEOUT_S), **process.launch_kwargs())
        if process.required:
            # launch 3.7 has no `required`: an exception raised by an event handler makes it shut every process
            # down and end with exit code 1 (Shutdown alone ends with 0). Exit 0 (a finished bag) is normal.
            actions.append(RegisterEventHandler(OnProcessExit(target_action=node,
                                                              on_exit=partial(_required_exit, process.name))))
        actions.append(node)
    return actions


def _required_exit(name: str, event: Any, context: Any) -> None:
    if event.returncode != 0:
        raise RuntimeError(f'{name} exited with code {event.returncode}, and the launch cannot do without it: '
                           'ending the launch')
