"""Command-line flags built from config dataclasses. A field with help text is a flag (`batch_size` is
`--batch-size`) with the field's type, default and choices; a bool is `--<name>` / `--no-<name>` (either overrides a
config file's value); a nested config's flags join the same command line in a group of their own. So a new
hyperparameter is one field in one place, and its check one line of its config's `__post_init__`.
"""

import argparse
import dataclasses
import types
import typing

from math_llm.errors import ConfigError


def option(default, help, *, choices=None, group=None, resumable=False, extends=False):
    """A config field that is a command-line flag. `help` says what the flag does (for a True-by-default bool, what
    `--no-<name>` does); `group`: its section of --help; `resumable`: a resumed run may take a new value of it (it
    changes how the run is watched, not what it computes); `extends`: a resumed run may take a new value of it that
    changes what it computes from there on (the number of epochs, to extend a run)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "group": group,
                                                        "resumable": resumable, "extends": extends})


def choice_problems(config):
    """The rule of every field with choices, for the config's __post_init__ (argparse checks flags against the same
    choices, but a config is also built in code and from saved JSON)."""
    return [f"{flag_name(field)} must be one of {', '.join(field.metadata['choices'])}, got "
            f"{getattr(config, field.name)!r}" for field in dataclasses.fields(config)
            if field.metadata.get("choices") is not None and getattr(config, field.name) not in field.metadata["choices"]]


def nested(config_class, group):
    """A field holding another config, whose flags join the command line under `group`."""
    return dataclasses.field(default_factory=config_class, metadata={"group": group})


def flag_fields(config_class, path=()):
    """{field name: (path of attribute names, field)} of every flag of the config and the configs inside it."""
    hints = typing.get_type_hints(config_class)
    found = {}
    for field in dataclasses.fields(config_class):
        if dataclasses.is_dataclass(hints[field.name]):
            inner = flag_fields(hints[field.name], path + (field.name,))
            if clash := inner.keys() & found.keys():
                raise TypeError(f"{config_class.__name__}: flags {sorted(clash)} are declared twice")
            found.update(inner)
        elif "help" in field.metadata:
            found[field.name] = (path + (field.name,), field)
    return found


def value_type(annotation):
    """int for `int` or `int | None`."""
    if isinstance(annotation, types.UnionType):
        return next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    return annotation


def flag_name(field):
    return "--" + field.name.replace("_", "-")


def add_flags(parser, config_class):
    """Adds every flag of `config_class` (and of the configs inside it) to `parser`, in the argument groups their
    metadata names (none: the parser's own options)."""
    groups = {None: parser}

    def group_for(title):
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        return groups[title]

    def add(cls, inherited_group):
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            kind = hints[field.name]
            if dataclasses.is_dataclass(kind):
                add(kind, field.metadata.get("group") or inherited_group)
                continue
            if "help" not in field.metadata:
                continue
            group = group_for(field.metadata["group"] or inherited_group)
            kind = value_type(kind)
            if kind is bool:
                group.add_argument(flag_name(field), dest=field.name, default=field.default,
                                   action=argparse.BooleanOptionalAction, help=field.metadata["help"])
                continue
            default_text = "" if field.default is None else " (default: %(default)s)"
            choices = field.metadata["choices"]
            group.add_argument(flag_name(field), dest=field.name, type=kind, default=field.default,
                               choices=list(choices) if choices is not None else None,
                               help=field.metadata["help"] + default_text)

    add(config_class, None)
    return parser


def config_from_flags(config_class, values):
    """The config (configs inside it too) from parsed flag values {field name: value}; fields that are not flags
    keep their defaults."""
    hints = typing.get_type_hints(config_class)
    arguments = {}
    for field in dataclasses.fields(config_class):
        if dataclasses.is_dataclass(hints[field.name]):
            arguments[field.name] = config_from_flags(hints[field.name], values)
        elif "help" in field.metadata and field.name in values:
            arguments[field.name] = values[field.name]
    return config_class(**arguments)


def parse_config(parser, config_class, argv, file_values=None):
    """(config, parsed namespace, names of the flags given explicitly): a resumed run keeps its own values for the
    flags not given. `file_values`: {field name: value} from a config file (see `flag_values`); the command line
    overrides them, and they count as given."""
    parser.set_defaults(**(file_values or {}))
    namespace = parser.parse_args(argv)
    config = config_from_flags(config_class, vars(namespace))
    not_given = object()  # not a string, so argparse does not type-convert it
    parser.set_defaults(**{name: not_given for name in vars(namespace)})
    explicit = frozenset(name for name, value in vars(parser.parse_args(argv)).items() if value is not not_given)
    parser.set_defaults(**vars(namespace))
    return config, namespace, explicit | set(file_values or ())


def flag_values(config_class, values, source):
    """{field name: value} of the flags in `values` (a mapping read from a YAML or JSON file, keyed by field name as
    `learning_rate`), each converted to its flag's type; an unknown name or a value of the wrong type is a
    ConfigError naming `source`."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(values).__name__}")
    fields = flag_fields(config_class)
    converted = {}
    for name, value in values.items():
        if name not in fields:
            raise ConfigError(f"{source}: unknown setting {name!r} (the settings are the flags of "
                              f"{config_class.__name__}, written with underscores: {', '.join(sorted(fields))})")
        field = fields[name][1]
        kind = value_type(field.type)
        try:
            converted[name] = convert(value, kind, field)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: {name} must be {kind.__name__}"
                              f"{' or null' if field.type is not kind else ''}, got {value!r}") from None
    return converted


def convert(value, kind, field):
    """`value` as `kind`: YAML reads 1e-3 as a string and 3 as an int where a float is meant; nothing else is
    guessed (a bool is not a number, a number not a string)."""
    if value is None and field.type is not kind:
        return None
    if kind is float and not isinstance(value, bool) and isinstance(value, (int, float, str)):
        return float(value)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise TypeError(value)


def config_from_dict(config_class, values, source):
    """A config from its saved form (dataclasses.asdict, read back from JSON); `source` names the file in errors."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected the settings of {config_class.__name__} as an object, got "
                          f"{type(values).__name__}")
    hints = typing.get_type_hints(config_class)
    names = {field.name for field in dataclasses.fields(config_class)}
    if unknown := sorted(set(values) - names):
        raise ConfigError(f"{source}: unknown settings {', '.join(unknown)} for {config_class.__name__}")
    arguments = {name: config_from_dict(hints[name], value, source) if dataclasses.is_dataclass(hints[name])
                 else value for name, value in values.items()}
    try:
        return config_class(**arguments)
    except (TypeError, ConfigError) as error:  # a missing argument, or a value its __post_init__ refuses
        raise ConfigError(f"{source}: {error}") from None


def resume_config(config, explicit_flags, saved, source):
    """The saved config of a run being resumed, changed by the explicitly given flags that may change on resume;
    any other explicit flag that differs from the run is a ConfigError naming each, with both values."""
    conflicts, changes = [], {}
    for name, (path, field) in flag_fields(type(config)).items():
        given, had = attribute(config, path), attribute(saved, path)
        if name not in explicit_flags or given == had:
            continue
        if field.metadata["resumable"] or field.metadata["extends"]:
            changes[path] = given
        elif value_type(field.type) is bool:
            conflicts.append(f"{flag_name(field) if given else '--no-' + flag_name(field)[2:]} (run has {name} {had!r})")
        else:
            conflicts.append(f"{flag_name(field)} {given!r} (run has {had!r})")
    if conflicts:
        raise ConfigError(f"{source}: cannot resume with different settings: {', '.join(conflicts)}. "
                          f"Drop these flags to resume, or choose a new --output-dir")
    for path, value in changes.items():
        saved = with_attribute(saved, path, value)
    return saved


def attribute(config, path):
    for name in path:
        config = getattr(config, name)
    return config


def with_attribute(config, path, value):
    """A copy of the config with the attribute at `path` (inside nested configs) set to `value`."""
    inner = value if len(path) == 1 else with_attribute(getattr(config, path[0]), path[1:], value)
    return dataclasses.replace(config, **{path[0]: inner})
