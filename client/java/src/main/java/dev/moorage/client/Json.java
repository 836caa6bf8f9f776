package dev.moorage.client;

import com.google.gson.Gson;
import com.google.gson.JsonElement;
import com.google.gson.JsonParser;

/** JSON text in and out of the *_json fields of the protocol. */
final class Json {
  static final Gson GSON = new Gson();

  private Json() {}

  static String dumps(Object value) {
    if (value == null) return "";
    if (value instanceof JsonElement element) return element.toString();
    return GSON.toJson(value);
  }

  static <T> T loads(String text, Class<T> type) {
    if (text == null || text.isEmpty()) return null;
    return GSON.fromJson(text, type);
  }

  static JsonElement tree(String text) {
    if (text == null || text.isEmpty()) return null;
    return JsonParser.parseString(text);
  }
}
